//! Frame building for fixtures (filled in by the packet tests).
