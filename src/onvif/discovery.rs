//! WS-Discovery (ONVIF Core 2.x section 7, WS-Discovery 1.0 2005/04): Probe for
//! `dn:NetworkVideoTransmitter` and the ProbeMatches devices send back.
