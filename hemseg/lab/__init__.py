"""Research tools, apart from what users run: speed (bench), seed thresholds (calibrate), what the data allow
(ceilings), training runs side by side (compare) and scores under image shifts (robustness)."""
