# webapp_flask.py: a Flask app that verifies a number by voice, holding no ihuyi secret
from flask import Flask, jsonify, request

from tasks.producer import InvalidPayload, Throttled, check_verification, start_verification

app = Flask(__name__)


@app.post("/login/voice-code")
def send_login_code():
    try:
        # The form's one-time nonce as request_id: a double submit starts one verification, one call.
        verification = start_verification(request.form.get("mobile", ""), request_id=f"login:{request.form['nonce']}")
    except Throttled as exc:  # before InvalidPayload, which it is a kind of
        return jsonify(error="too many calls to this number", retry_after=round(exc.retry_after)), 429
    except InvalidPayload as exc:
        return jsonify(error=f"invalid {exc.field}"), 400
    return jsonify(verification_id=verification.id, expires_at=verification.expires_at), 202


@app.post("/login/check")
def check_login_code():
    # In your app the number comes from the session that asked for the code, not from this form.
    try:
        answer = check_verification(request.form.get("mobile", ""), request.form.get("code", ""))
    except InvalidPayload as exc:
        return jsonify(error=f"invalid {exc.field}"), 400
    status = 200 if answer.status == "approved" else 403  # rejected, expired, locked or not_found
    return jsonify(status=answer.status, attempts_left=answer.attempts_left), status
