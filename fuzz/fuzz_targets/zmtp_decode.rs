#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| mongrel2_transceiver_fuzz::zmtp_decode(data));
