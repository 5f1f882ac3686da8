package main

import (
	"encoding/json"
	"net/http"
)

// The proxy answers GET /v1/models and /v1/models/{id} itself, from the
// configured models: Azure lists models, not deployments.

type modelObject struct {
	ID      string `json:"id"`
	Object  string `json:"object"`
	Created int64  `json:"created"`
	OwnedBy string `json:"owned_by"`
}

func (h *proxyHandler) modelObject(id string) modelObject {
	return modelObject{ID: id, Object: "model", Created: h.started, OwnedBy: "azure-openai-proxy"}
}

// serveModels answers a models route. A client held to a list of models
// sees those alone.
func (h *proxyHandler) serveModels(w http.ResponseWriter, table *routeTable, rt route, who *client) *apiError {
	if rt.kind == routeModel {
		switch {
		case !who.allowsModel(rt.model):
			return modelNotAllowed(who, rt.model)
		case table.models[rt.model] == nil && (who == nil || who.models == nil):
			return newAPIError(http.StatusNotFound, typeInvalidRequest, "model_not_found", "model",
				"The model '"+shorten(rt.model)+"' does not exist: it is not configured in this proxy.")
		}
		writeJSON(w, http.StatusOK, h.modelObject(rt.model))
		return nil
	}
	list := struct {
		Object string        `json:"object"`
		Data   []modelObject `json:"data"`
	}{Object: "list", Data: []modelObject{}}
	names := table.modelNames
	if who != nil && who.models != nil {
		names = who.models
	}
	for _, m := range names {
		list.Data = append(list.Data, h.modelObject(m))
	}
	writeJSON(w, http.StatusOK, list)
	return nil
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}
