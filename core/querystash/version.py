from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("querystash")
except PackageNotFoundError:  # running from a source tree
    __version__ = "0+unknown"
