"""Studies of tickets once found: mask overlap, stability (linear mode connectivity), supermasks."""
