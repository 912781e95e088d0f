"""Load generation beyond one process: tallies merged across Locust workers, the coordination
of a distributed open-loop run, and the SLO view in Locust's web dashboard."""
