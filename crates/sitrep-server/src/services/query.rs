//! `QueryService`: the current picture, the directory and the catalogue, on request.

use std::sync::Arc;

use sitrep_proto::v1 as pb;
use tonic::{Request, Response, Status};

use super::Context;
use crate::convert::{catalogue_to_wire, directory_to_wire, live_to_wire};
use crate::error;

pub struct QueryApi {
    ctx: Arc<Context>,
}

impl QueryApi {
    pub fn new(ctx: Arc<Context>) -> Self {
        QueryApi { ctx }
    }
}

#[tonic::async_trait]
impl pb::query_service_server::QueryService for QueryApi {
    async fn get_snapshot(&self, request: Request<pb::GetSnapshotRequest>) -> Result<Response<pb::Snapshot>, Status> {
        let filter = self.ctx.resolve(request.get_ref().filter.as_ref())?;
        let snap = self.ctx.store.snapshot(&filter.providers).await.map_err(error::store)?;
        Ok(Response::new(pb::Snapshot {
            cursor: snap.cursor.to_string(),
            providers: snap.providers.iter().map(|p| live_to_wire(p, filter.metrics.as_ref())).collect(),
        }))
    }

    async fn get_directory(&self, _: Request<pb::GetDirectoryRequest>) -> Result<Response<pb::Directory>, Status> {
        Ok(Response::new(directory_to_wire(&self.ctx.directory)))
    }

    async fn get_catalogue(&self, _: Request<pb::GetCatalogueRequest>) -> Result<Response<pb::Catalogue>, Status> {
        Ok(Response::new(catalogue_to_wire(&self.ctx.catalogue)))
    }
}
