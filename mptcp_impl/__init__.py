"""Our userspace MPTCP stack: tcp/ is a complete TCP with hooks, mptcp/ sits on top of it."""
