"""Where data comes from: agency file roots and connection profiles (the source store) and
the pure rules of where a source may point (:mod:`.locations`)."""
