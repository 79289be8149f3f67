//! The gRPC contracts of the `membership`, `messages` and `presence` services, generated from
//! `proto/` at build time. Services convert these types to their domain types at the edge.
//!
//! The module tree mirrors the proto packages (`switchboard.<service>.v1`) because generated
//! code refers to other packages by relative paths.

#![allow(clippy::all, missing_docs)]

pub mod switchboard {
    pub mod common {
        pub mod v1 {
            tonic::include_proto!("switchboard.common.v1");
        }
    }
    pub mod membership {
        pub mod v1 {
            tonic::include_proto!("switchboard.membership.v1");
        }
    }
    pub mod messages {
        pub mod v1 {
            tonic::include_proto!("switchboard.messages.v1");
        }
    }
    pub mod presence {
        pub mod v1 {
            tonic::include_proto!("switchboard.presence.v1");
        }
    }
}

pub use switchboard::common::v1 as common;
pub use switchboard::membership::v1 as membership;
pub use switchboard::messages::v1 as messages;
pub use switchboard::presence::v1 as presence;
