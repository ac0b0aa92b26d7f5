"""LATTE: the LiDAR annotation web app (one-click boxes, camera fusion, tracking; Wang, Wu et al., ITSC 2019)."""
