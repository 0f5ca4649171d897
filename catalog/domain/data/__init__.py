"""Reference data shipped with blockhub (a package so that the CSVs travel in the wheel)."""
