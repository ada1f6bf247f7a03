from tests.conftest import Api, auth


def test_registered_user_can_read_themselves(api: Api) -> None:
    token = api.register("alice")
    resp = api.client.get("/api/user", headers=auth(token))
    assert resp.status_code == 200
    assert resp.json["user"]["username"] == "alice"
