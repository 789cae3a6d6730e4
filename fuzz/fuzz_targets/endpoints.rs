//! The core/v1 Endpoints → EndpointSlice conversion of direct GETs, and the
//! resolution of a Service over its result, on any JSON the API server could
//! send (see `kubesocks_engine::fuzz::endpoints` for what is checked).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: &[u8]| kubesocks_engine::fuzz::endpoints(input));
