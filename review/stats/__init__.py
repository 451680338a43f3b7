"""Statistics: tests and intervals, verdicts, screening, allocation, simulation and the leaderboard."""
