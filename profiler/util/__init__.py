"""Small helpers below every analyzer: units (:mod:`.units`) and files written atomically (:mod:`.files`)."""
