"""Pages people read: interactive charts (bokeh, inlined) and the thinning that keeps a
long run's page light, shared by the run report, compare and the monitor page."""
