"""The assembly: the objects a blockhub process works with (:class:`context.Hub`), built once
from settings by the entry points (the API server, the CLI, the demo) and handed to the
wings, which never import it."""
