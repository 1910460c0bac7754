//! Fault and abuse tests (issue 11): each finding of the hostile-input review replayed against
//! the real binary, a real mosquitto and a scripted fake RTSP server. Every test asserts that an
//! incident of a healthy camera is still delivered and the outbox drains while the abuse goes on.
//! One module per surface an attacker or a careless user can reach.

mod camera;
mod console;
mod mqtt;
