//! The gRPC edge: converts generated types to domain types (validating them), calls the
//! [`Store`], applies the role table, and converts back.

use switchboard_common::{DomainError, RoomKey};
use switchboard_proto::{common, membership as pb};
use tonic::{Request, Response, Status};

use crate::{
    domain::{self, AuthorizeQuery, Decision, Grant, Revoke, RoomUpsert, Standing, User},
    roles::{Permission, Permissions, RoleTable},
    store::Store,
};

/// The `Membership` gRPC service.
#[derive(Clone)]
pub struct MembershipService {
    store: Store,
    roles: RoleTable,
}

impl MembershipService {
    pub fn new(store: Store, roles: RoleTable) -> Self {
        MembershipService { store, roles }
    }
}

/// The decision for `action` given the user's standing: allowed when any held role (on the
/// room or an ancestor) grants it; the reported role is the nearest one.
pub fn decide(roles: &RoleTable, standing: Standing, action: Permission) -> Decision {
    if !standing.room_exists {
        return Decision::default();
    }
    let granted = standing
        .roles
        .iter()
        .fold(Permissions::NONE, |all, r| all.union(roles.permissions(r)));
    Decision {
        room_exists: true,
        allowed: granted.contains(action),
        role: standing.roles.into_iter().next().unwrap_or_default(),
        direct: standing.direct,
        granted,
    }
}

fn ok<T>(r: Result<T, DomainError>) -> Result<Response<T>, Status> {
    r.map(Response::new).map_err(Into::into)
}

#[tonic::async_trait]
impl pb::membership_server::Membership for MembershipService {
    async fn upsert_user(&self, request: Request<pb::User>) -> Result<Response<pb::User>, Status> {
        let user = User::try_from(request.into_inner())?;
        ok(self.store.upsert_user(&user).await.map(Into::into))
    }

    async fn get_user(
        &self,
        request: Request<pb::GetUserRequest>,
    ) -> Result<Response<pb::User>, Status> {
        let id = domain::id("id", request.into_inner().id)?;
        ok(self.store.get_user(&id).await.map(Into::into))
    }

    async fn upsert_room(
        &self,
        request: Request<pb::UpsertRoomRequest>,
    ) -> Result<Response<pb::Room>, Status> {
        let upsert = RoomUpsert::try_from(request.into_inner())?;
        ok(self.store.upsert_room(&upsert).await.map(Into::into))
    }

    async fn get_room(
        &self,
        request: Request<common::RoomRef>,
    ) -> Result<Response<pb::RoomDetail>, Status> {
        let room = RoomKey::try_from(request.into_inner())?;
        ok(self
            .store
            .get_room(&room)
            .await
            .map(|(room, members)| pb::RoomDetail {
                room: Some(room.into()),
                members: members.into_iter().map(Into::into).collect(),
            }))
    }

    async fn grant_member(
        &self,
        request: Request<pb::GrantMemberRequest>,
    ) -> Result<Response<pb::Member>, Status> {
        let grant = Grant::try_from(request.into_inner())?;
        ok(self.store.grant(&grant).await.map(Into::into))
    }

    async fn revoke_member(
        &self,
        request: Request<pb::RevokeMemberRequest>,
    ) -> Result<Response<pb::RevokeMemberResponse>, Status> {
        let revoke = Revoke::try_from(request.into_inner())?;
        ok(self.store.revoke(&revoke).await.map(Into::into))
    }

    async fn authorize(
        &self,
        request: Request<pb::AuthorizeRequest>,
    ) -> Result<Response<pb::AuthorizeResponse>, Status> {
        let q = AuthorizeQuery::try_from(request.into_inner())?;
        let standing = self.store.standing(&q.user_id, &q.room).await?;
        Ok(Response::new(
            decide(&self.roles, standing, q.action).into(),
        ))
    }

    async fn list_contacts(
        &self,
        request: Request<pb::ListContactsRequest>,
    ) -> Result<Response<pb::ListContactsResponse>, Status> {
        let user_id = domain::id("user_id", request.into_inner().user_id)?;
        ok(self
            .store
            .contacts(&user_id)
            .await
            .map(|user_ids| pb::ListContactsResponse { user_ids }))
    }

    async fn list_user_rooms(
        &self,
        request: Request<pb::ListUserRoomsRequest>,
    ) -> Result<Response<pb::ListUserRoomsResponse>, Status> {
        let r = request.into_inner();
        let user_id = domain::id("user_id", r.user_id)?;
        // Validates the kind the same way as a room's.
        let kind = RoomKey::parse("room", r.kind, "-")?.kind;
        ok(self
            .store
            .user_rooms(&user_id, &kind)
            .await
            .map(|rooms| pb::ListUserRoomsResponse {
                rooms: rooms.into_iter().map(Into::into).collect(),
            }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn standing(roles: &[&str], direct: bool) -> Standing {
        Standing {
            room_exists: true,
            roles: roles.iter().map(|r| r.to_string()).collect(),
            direct,
        }
    }

    #[test]
    fn missing_room_allows_nothing() {
        let d = decide(&RoleTable::default(), Standing::default(), Permission::Read);
        assert_eq!(d, Decision::default());
    }

    #[test]
    fn any_held_role_may_grant_but_the_nearest_is_reported() {
        let d = decide(
            &RoleTable::default(),
            standing(&["viewer", "owner"], true),
            Permission::Send,
        );
        assert!(d.allowed);
        assert_eq!(d.role, "viewer");
        assert!(d.direct);
        // The union of both roles' permissions: the owner's grant everything.
        assert_eq!(d.granted, Permissions::all());
    }

    #[test]
    fn granted_is_the_union_of_the_held_roles() {
        let d = decide(
            &RoleTable::default(),
            standing(&["viewer"], false),
            Permission::Send,
        );
        assert!(!d.allowed);
        assert_eq!(
            d.granted.iter().collect::<Vec<_>>(),
            [Permission::Join, Permission::Read, Permission::History]
        );
        let wire = pb::AuthorizeResponse::from(d);
        assert_eq!(wire.granted, ["join", "read", "history"]);
    }

    #[test]
    fn no_role_no_access() {
        let d = decide(
            &RoleTable::default(),
            standing(&[], false),
            Permission::Read,
        );
        assert!(d.room_exists && !d.allowed && d.role.is_empty() && !d.direct);
    }
}
