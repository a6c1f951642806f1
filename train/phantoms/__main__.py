"""`python -m train.phantoms ...`: see train.phantoms."""
from train.phantoms import main

main()
