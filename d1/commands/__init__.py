"""One module per `d1` sub-command, loaded only when that command runs (keeps `d1 --help` fast)."""
