"""Experiment grids (Table 3, Figs. 3–4, your own) as data, the results store, the driver."""
