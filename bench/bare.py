"""The baseline for the ingest benchmark: a bare FastAPI endpoint that answers 202 and stores
nothing. Same route shape and answer as the gateway, so the ratio isolates the gateway's work."""

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

app = FastAPI()


@app.post("/forms/{form_id}")
async def submit(form_id: str, request: Request) -> JSONResponse:
    await request.body()
    return JSONResponse({"id": "00000000-0000-0000-0000-000000000000", "status": "accepted"}, 202)
