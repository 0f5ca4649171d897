"""What every route and the websocket share: authentication and limits as dependencies,
the one error shape, links, and how an answer is streamed."""
