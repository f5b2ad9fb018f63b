"""``python -m dinosae``, which is also how ``torchrun -m dinosae ...`` starts each process."""

from dinosae.cli import main

main()
