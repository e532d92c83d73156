//! Notifications (admins): `/api/notify/channels` (list, create, delete, `POST …/{id}/test`),
//! `/api/notify/subscriptions` (list, create, delete) and `/api/notify/deliveries` (the log; one with its attempts;
//! `POST …/{id}/resend`).

use std::time::Duration;

use axum::{extract::State, http::StatusCode, Json};
use serde::{Deserialize, Serialize};
use utoipa_axum::routes;

use super::{
    activity::RequestOrigin,
    auth::Authenticated,
    error::ErrorBody,
    extract::{JsonBody, Path, Query},
    routes::{Access, Routes},
    AppState, HttpError,
};
use crate::{
    activity::Change,
    auth::Role,
    notify::{ChannelCreated, ChannelSpec, ChannelView, DeliveryView, SubscriptionSpec, SubscriptionView},
    store::DeliveryQuery,
};

/// The most deliveries one request lists.
const MAX_DELIVERIES: i64 = 1_000;
/// How long "send a test" waits for the receiver's answer before answering with the delivery as it stands.
const TEST_WAIT: Duration = Duration::from_secs(20);

pub fn router() -> Routes {
    let admin = Access::AtLeast(Role::Admin);
    Routes::new()
        .api(admin, routes!(channels))
        .api(admin, routes!(create_channel))
        .api(admin, routes!(delete_channel))
        .api(admin, routes!(test_channel))
        .api(admin, routes!(subscriptions))
        .api(admin, routes!(create_subscription))
        .api(admin, routes!(delete_subscription))
        .api(admin, routes!(deliveries))
        .api(admin, routes!(delivery))
        .api(admin, routes!(resend))
}

/// Every channel, by name. Secrets are never shown; a Slack URL only by its host.
#[utoipa::path(get, path = "/api/notify/channels", tag = "notify", responses((status = 200, body = Vec<ChannelView>)))]
async fn channels(State(state): State<AppState>, who: Authenticated) -> Result<Json<Vec<ChannelView>>, HttpError> {
    who.require(Role::Admin)?;
    Ok(Json(state.notify.channels().await?))
}

/// Creates a channel. A webhook's signing secret is in this answer and never again: receivers verify
/// `X-OMServer-Signature: sha256=HMAC-SHA256(secret, X-OMServer-Timestamp + "." + body)`.
#[utoipa::path(post, path = "/api/notify/channels", tag = "notify", request_body = ChannelSpec, responses(
    (status = 201, description = "created", body = ChannelCreated),
    (status = 422, description = "not valid (url, addresses, smtp…); `field` names the part", body = ErrorBody),
))]
async fn create_channel(
    State(state): State<AppState>,
    who: Authenticated,
    origin: RequestOrigin,
    spec: Result<JsonBody<ChannelSpec>, HttpError>,
) -> Result<(StatusCode, Json<ChannelCreated>), HttpError> {
    let principal = who.require(Role::Admin)?;
    let JsonBody(spec) = spec?;
    let created = state.notify.add_channel(spec, &principal.name).await?;
    // Recorded as the API shows it: never the secret, a Slack URL only by its host.
    let view = state.notify.channels().await?.into_iter().find(|c| c.id == created.id);
    let change = Change::ok("channel.add", format!("channel {}", created.id)).fields(&view);
    state.activity.record(&origin.actor(principal), change).await;
    Ok((StatusCode::CREATED, Json(created)))
}

/// Deletes a channel with its subscriptions and its deliveries.
#[utoipa::path(delete, path = "/api/notify/channels/{id}", tag = "notify",
    params(("id" = i64, Path, description = "channel id")),
    responses((status = 204, description = "deleted"), (status = 404, description = "no such channel", body = ErrorBody)))]
async fn delete_channel(
    State(state): State<AppState>,
    who: Authenticated,
    origin: RequestOrigin,
    Path(id): Path<i64>,
) -> Result<StatusCode, HttpError> {
    let principal = who.require(Role::Admin)?;
    let before = state.notify.channels().await?.into_iter().find(|c| c.id == id);
    state.notify.delete_channel(id, &principal.name).await?;
    let change = Change::ok("channel.delete", format!("channel {id}")).fields(&before);
    state.activity.record(&origin.actor(principal), change).await;
    Ok(StatusCode::NO_CONTENT)
}

/// Sends a test message through the channel and answers with its delivery once the first attempt ended (or
/// after 20 s, still `pending`).
#[utoipa::path(post, path = "/api/notify/channels/{id}/test", tag = "notify",
    params(("id" = i64, Path, description = "channel id")),
    responses((status = 200, body = DeliveryView), (status = 404, description = "no such channel", body = ErrorBody)))]
async fn test_channel(
    State(state): State<AppState>,
    who: Authenticated,
    origin: RequestOrigin,
    Path(id): Path<i64>,
) -> Result<Json<DeliveryView>, HttpError> {
    let principal = who.require(Role::Admin)?;
    let delivery = state.notify.test_channel(id, &principal.name, TEST_WAIT).await?;
    let change = Change::ok("channel.test", format!("channel {id}")).with("delivery", delivery.id);
    state.activity.record(&origin.actor(principal), change).await;
    Ok(Json(delivery))
}

/// Every subscription, oldest first.
#[utoipa::path(get, path = "/api/notify/subscriptions", tag = "notify",
    responses((status = 200, body = Vec<SubscriptionView>)))]
async fn subscriptions(
    State(state): State<AppState>,
    who: Authenticated,
) -> Result<Json<Vec<SubscriptionView>>, HttpError> {
    who.require(Role::Admin)?;
    Ok(Json(state.notify.subscriptions().await?))
}

#[derive(Serialize, utoipa::ToSchema)]
struct Created {
    id: i64,
}

/// Subscribes a channel to an event, optionally filtered (a rule, saved job or schedule named in the filter must
/// exist).
#[utoipa::path(post, path = "/api/notify/subscriptions", tag = "notify", request_body = SubscriptionSpec, responses(
    (status = 201, description = "subscribed", body = Created),
    (status = 422, description = "not valid; `field` names the part", body = ErrorBody),
))]
async fn create_subscription(
    State(state): State<AppState>,
    who: Authenticated,
    origin: RequestOrigin,
    spec: Result<JsonBody<SubscriptionSpec>, HttpError>,
) -> Result<(StatusCode, Json<Created>), HttpError> {
    let principal = who.require(Role::Admin)?;
    let JsonBody(spec) = spec?;
    let id = state.notify.add_subscription(spec, &principal.name).await?;
    let view = state.notify.subscriptions().await?.into_iter().find(|s| s.id == id);
    let change = Change::ok("subscription.add", format!("subscription {id}")).fields(&view);
    state.activity.record(&origin.actor(principal), change).await;
    Ok((StatusCode::CREATED, Json(Created { id })))
}

#[utoipa::path(delete, path = "/api/notify/subscriptions/{id}", tag = "notify",
    params(("id" = i64, Path, description = "subscription id")),
    responses((status = 204, description = "deleted"), (status = 404, description = "no such subscription", body = ErrorBody)))]
async fn delete_subscription(
    State(state): State<AppState>,
    who: Authenticated,
    origin: RequestOrigin,
    Path(id): Path<i64>,
) -> Result<StatusCode, HttpError> {
    let principal = who.require(Role::Admin)?;
    let before = state.notify.subscriptions().await?.into_iter().find(|s| s.id == id);
    state.notify.delete_subscription(id, &principal.name).await?;
    let change = Change::ok("subscription.delete", format!("subscription {id}")).fields(&before);
    state.activity.record(&origin.actor(principal), change).await;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct DeliveriesQuery {
    /// `pending`, `sent` or `failed`.
    #[param(pattern = "^(pending|sent|failed)$")]
    status: Option<String>,
    /// A channel id.
    channel: Option<i64>,
    /// An event name, e.g. `job.finished`.
    event: Option<String>,
    /// Deliveries with an id below this (the next page).
    before: Option<i64>,
    /// How many, newest first (1-1000, default 100).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<i64>,
}

/// The delivery log, newest first.
#[utoipa::path(get, path = "/api/notify/deliveries", tag = "notify", params(DeliveriesQuery), responses(
    (status = 200, body = Vec<DeliveryView>),
    (status = 422, description = "a filter is not valid", body = ErrorBody),
))]
async fn deliveries(
    State(state): State<AppState>,
    who: Authenticated,
    query: Result<Query<DeliveriesQuery>, HttpError>,
) -> Result<Json<Vec<DeliveryView>>, HttpError> {
    who.require(Role::Admin)?;
    let Query(query) = query?;
    let limit = query.limit.unwrap_or(100);
    if !(1..=MAX_DELIVERIES).contains(&limit) {
        return Err(HttpError::unprocessable("limit", format!("must be between 1 and {MAX_DELIVERIES}")));
    }
    if let Some(status) = &query.status {
        if !["pending", "sent", "failed"].contains(&status.as_str()) {
            return Err(HttpError::unprocessable("status", "one of pending, sent, failed"));
        }
    }
    let filter = DeliveryQuery {
        status: query.status,
        channel_id: query.channel,
        event: query.event,
        before: query.before,
        limit,
    };
    Ok(Json(state.notify.deliveries(&filter).await?))
}

/// One delivery with every attempt (when, taken or not, the receiver's answer or the error).
#[utoipa::path(get, path = "/api/notify/deliveries/{id}", tag = "notify",
    params(("id" = i64, Path, description = "delivery id")),
    responses((status = 200, body = DeliveryView), (status = 404, description = "no such delivery", body = ErrorBody)))]
async fn delivery(
    State(state): State<AppState>,
    who: Authenticated,
    Path(id): Path<i64>,
) -> Result<Json<DeliveryView>, HttpError> {
    who.require(Role::Admin)?;
    Ok(Json(state.notify.delivery(id).await?))
}

/// Sends a failed delivery again (same `id` for the receiver), with a fresh deadline.
#[utoipa::path(post, path = "/api/notify/deliveries/{id}/resend", tag = "notify",
    params(("id" = i64, Path, description = "delivery id")),
    responses(
        (status = 200, body = DeliveryView),
        (status = 404, description = "no such delivery", body = ErrorBody),
        (status = 409, description = "the delivery is not failed", body = ErrorBody),
))]
async fn resend(
    State(state): State<AppState>,
    who: Authenticated,
    origin: RequestOrigin,
    Path(id): Path<i64>,
) -> Result<Json<DeliveryView>, HttpError> {
    let principal = who.require(Role::Admin)?;
    let delivery = state.notify.resend(id, &principal.name).await?;
    state.activity.record(&origin.actor(principal), Change::ok("delivery.resend", format!("delivery {id}"))).await;
    Ok(Json(delivery))
}
