"""The project's own tasks: its LightningModules (models/) and LightningDataModules (data/), each named by a config in
conf/model/ or conf/data/. The machinery that trains them is the hydralight library."""
