"""What a job shows on the terminal and where everything else goes: live progress
(`progress.Meter`) and the routing of the libraries' own output to the run dir's logs
(`logs.route`)."""
