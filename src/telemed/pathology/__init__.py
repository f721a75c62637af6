"""Remote pathology (远程病理): whole-slide images, the site gateway, annotations and the pathology report.

Public API for the other packages (the portal, the CLI): the slide interface and the gateway.
Nothing else in this package is imported from outside it.
"""

from telemed.pathology.slide import Slide, SlideError, SlideInfo
from telemed.pathology.tilecache import TileCache

__all__ = ["Slide", "SlideError", "SlideInfo", "TileCache"]
