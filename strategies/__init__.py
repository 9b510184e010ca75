"""Strategy plugins shipped as examples. They import ``engine`` only."""
