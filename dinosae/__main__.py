"""``python -m dinosae``, which is also how ``torchrun -m dinosae ...`` starts each process."""

from dinosae.cli import main

if __name__ == "__main__":
    main()
