"""The demo world: the sample world of Guiyang, its manifests (world/), the demo blocks
and the guided tour."""
