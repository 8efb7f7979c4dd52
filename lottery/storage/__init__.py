"""Where results live: run directories and their lock (``rundir``), atomic checked file I/O (``atomic``), and the
named crash points the fault tests kill a process at (``faults``)."""
