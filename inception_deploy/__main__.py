"""`python -m inception_deploy`: the same command line as `inception-deploy`."""

from .cli import main

if __name__ == "__main__":
    main(prog_name="inception-deploy")
