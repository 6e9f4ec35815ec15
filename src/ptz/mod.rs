//! Pan / tilt / zoom control of cameras.
