//! One module per wire protocol. Each decodes its frames with pure functions (golden-tested),
//! translates them into operations on the shared [`crate::eventlog`], and encodes the replies;
//! the socket loops around that stay thin and share [`socket`].

pub mod livestore;
pub mod pocket;
pub mod shared_frames;
pub mod socket;
pub mod synckit;

use axum::Router;

use crate::server::AppState;

/// The routes of every enabled protocol.
pub fn router(state: &AppState) -> Router<AppState> {
    let mut router = Router::new();
    if state.config.protocols.livestore.enabled {
        router = router.merge(livestore::router(&state.config.protocols.livestore));
    }
    if state.config.protocols.synckit.enabled {
        router = router.merge(synckit::router(state));
    }
    if state.config.protocols.pocket.enabled {
        router = router.merge(pocket::router(&state.config.protocols.pocket));
    }
    router
}
