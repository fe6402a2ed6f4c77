//! Junction's integration tests: one binary, the real server on port 0, real databases.

mod api;
mod backup;
mod bench;
mod cli;
mod cluster;
mod deploy;
mod eventlog;
mod faults;
mod helpers;
mod hostile;
mod http;
mod identity_provider;
mod import_d1;
mod input;
mod livestore;
mod livestore_apps;
mod livestore_interop;
mod pocket;
mod pocket_interop;
mod scale_out;
mod synckit;
mod synckit_interop;
mod tls;
mod upgrade;
