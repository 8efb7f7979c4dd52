"""Where results live: run directories and their lock (``rundir``) and atomic checked file I/O (``atomic``)."""
