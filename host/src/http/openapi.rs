//! `/openapi.json` and `/docs`: the OpenAPI 3.1 document generated from the wire types and the
//! handlers' annotations (utoipa), completed at start with what only the running server knows —
//! the API key's scheme when one is set, and the routes of the endpoint plugins loaded — and
//! Swagger UI over it, its assets built into the binary (nothing is fetched from a CDN, and its
//! spec validator, which would send the document to swagger.io, is off).

use axum::Router;
use utoipa::OpenApi;
use utoipa::openapi::path::{HttpMethod, OperationBuilder, ParameterBuilder, ParameterIn};
use utoipa::openapi::response::ResponseBuilder;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme};
use utoipa::openapi::{ContentBuilder, ObjectBuilder, OpenApi as Document, Ref, Required, Type};
use utoipa_swagger_ui::{Config, SwaggerUi};

use super::state::SharedState;
use super::{
    audio, chat, completions, embeddings, health, image_generation, internal, metrics, model_admin, models,
    moderations, responses, speech,
};
use crate::plugins::PluginKind;

/// The routes and types Hearth itself defines.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "Hearth",
        description = "A local, private, OpenAI-compatible inference server. It follows OpenAI's \
            API and text-generation-webui's (its extra sampler fields on chat and completions, \
            its `/v1/internal/*` routes); every field documented here is checked, and an unknown \
            one is a 400 naming it.",
        license(name = "Apache-2.0 OR MIT"),
    ),
    paths(
        chat::chat_completions,
        completions::completions,
        responses::create,
        responses::retrieve,
        responses::delete,
        responses::cancel,
        responses::input_items,
        embeddings::embeddings,
        audio::transcriptions,
        speech::speech,
        image_generation::generations,
        moderations::moderations,
        models::list,
        models::retrieve,
        internal::encode,
        internal::decode,
        internal::token_count,
        internal::logits,
        internal::chat_prompt,
        internal::stop_generation,
        internal::model_info,
        internal::model_list,
        model_admin::load,
        model_admin::unload,
        health::health,
        health::internal_health,
        metrics::metrics,
    ),
    // Referenced through `health`'s response enum, which does not collect it as a body would.
    components(schemas(health::HealthStatus, audio::TranscriptionVerboseJson)),
    tags(
        (name = "chat", description = "OpenAI's chat completions, with text-generation-webui's fields"),
        (name = "completions", description = "OpenAI's text completions, with text-generation-webui's fields"),
        (name = "responses", description = "OpenAI's Responses API: stored, continued with `previous_response_id`, streamed as typed events"),
        (name = "embeddings", description = "Sentence embeddings"),
        (name = "audio", description = "Speech to text with a Whisper model, text to speech with a Piper voice"),
        (name = "images", description = "Image generation with a Stable Diffusion 1.x/2.x model"),
        (name = "moderations", description = "Moderation, answered by moderation plugins"),
        (name = "models", description = "The models Hearth can serve"),
        (name = "internal", description = "text-generation-webui's internal routes"),
        (name = "server", description = "Health and metrics"),
        (name = "plugins", description = "Routes answered by endpoint plugins"),
    )
)]
struct HearthApi;

/// The document for this server: Hearth's routes, the bearer key where one is required, and a
/// path for each endpoint plugin loaded.
pub fn document(state: &SharedState) -> Document {
    let mut doc = HearthApi::openapi();
    doc.info.version = env!("CARGO_PKG_VERSION").to_owned();
    if state.settings.api_key.is_some() || state.settings.admin_key.is_some() {
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "api_key",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("`Authorization: Bearer KEY`: the API key (--api-key), or for model management the admin key (--admin-key)"))
                    .build(),
            ),
        );
        doc.security = Some(vec![SecurityRequirement::new("api_key", Vec::<String>::new())]);
    }
    for plugin in state.plugins.of_kind(PluginKind::Endpoint) {
        let answer = ResponseBuilder::new()
            .description("The plugin's answer: its own status, headers and body")
            .content("*/*", ContentBuilder::new().build())
            .build();
        let failed = ResponseBuilder::new()
            .description("The plugin failed or ran out of time")
            .content(
                "application/json",
                ContentBuilder::new().schema(Some(Ref::from_schema_name("ErrorResponse"))).build(),
            )
            .build();
        let operation = OperationBuilder::new()
            .tag("plugins")
            .summary(Some(format!("Answered by the endpoint plugin `{}`", plugin.name)))
            .parameter(
                ParameterBuilder::new()
                    .name("path")
                    .parameter_in(ParameterIn::Path)
                    .required(Required::True)
                    .description(Some("The rest of the path, which the plugin reads"))
                    .schema(Some(ObjectBuilder::new().schema_type(Type::String))),
            )
            .response("200", answer)
            .response("502", failed.clone())
            .response("504", failed)
            .build();
        let methods = vec![HttpMethod::Get, HttpMethod::Post, HttpMethod::Put, HttpMethod::Delete];
        doc.paths.add_path_operation(format!("/v1/plugins/{}/{{path}}", plugin.name), methods, operation);
    }
    doc
}

/// `/openapi.json` and `/docs`, when the settings serve them.
pub fn routes(state: &SharedState) -> Router<SharedState> {
    if !state.settings.docs {
        return Router::new();
    }
    let config = Config::new(["/openapi.json"]).validator_url("none").try_it_out_enabled(true);
    Router::from(SwaggerUi::new("/docs").url("/openapi.json", document(state)).config(config))
}
