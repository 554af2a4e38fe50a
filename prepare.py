"""Write a dataset to disk for data=ondisk:  python prepare.py source=digits|text|folder [source.path=<files>]
[out=<dir>]  (see README "Data larger than memory")."""

from hydralight.core.cli import prepare_main

if __name__ == "__main__":
    prepare_main()
