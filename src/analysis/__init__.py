"""Analyses of pruning runs, all reading the shared record schema: functional categories and their
retention, rank dynamics, cost scaling, the HTML viewer and the export to the paper's demo format."""
