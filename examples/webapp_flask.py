# webapp_flask.py: a Flask app that verifies a number by voice, holding no ihuyi secret
import math
import secrets

from flask import Flask, jsonify, render_template_string, request, session

from tasks.producer import InvalidPayload, Throttled, check_verification, start_verification

app = Flask(__name__)
app.secret_key = secrets.token_bytes(32)  # signs the session cookie: yours is fixed, and kept secret


@app.post("/login/voice-code")
def send_login_code():
    try:
        # The form's one-time nonce as request_id: a double submit starts one verification, one call.
        # The client's address as requester: one client cannot have a thousand numbers called.
        verification = start_verification(request.form.get("mobile", ""), request_id=f"login:{request.form['nonce']}",
                                          requester=request.remote_addr)
    except Throttled as exc:  # before InvalidPayload, which it is a kind of
        return jsonify(error=str(exc), retry_after=round(exc.retry_after)), 429
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


# The same two steps as a page, at / (`make run` serves it on http://127.0.0.1:8000/).
PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Log in with a voice code</title></head><body>
<h1>Log in with a voice code</h1>
<p id="message">{{ message }}</p>
{% if asking %}<form method="post" action="/check">
  <label>Code you heard <input name="code" inputmode="numeric" autocomplete="one-time-code" autofocus></label>
  <button id="check">Check</button>
</form>{% endif %}
<form method="post" action="/start">
  <input type="hidden" name="nonce" value="{{ nonce }}">
  <label>Mobile number <input name="mobile" type="tel" autocomplete="tel"{% if not asking %} autofocus{% endif %}></label>
  <button id="start">{{ "Call me again" if asking else "Call me with a code" }}</button>
</form>
</body></html>"""
ANSWERS = {
    "approved": "Approved: you are logged in as {mobile}.",
    "rejected": "Rejected: that is not the code ({attempts_left} attempts left).",
    "locked": "Locked: too many wrong codes. Ask for a new call.",
    "expired": "Expired: the code is too old. Ask for a new call.",
    "not_found": "Not found: no code is waiting for {mobile}. Ask for a call.",
}


def page(message, status=200, asking=False):
    # A new nonce with every page (Jinja escapes every value): a double click sends it twice, one call.
    return render_template_string(PAGE, message=message, asking=asking, nonce=secrets.token_urlsafe(16)), status


@app.get("/")
def login_page():
    return page("Enter your mobile number: a call will read you a code.")


@app.post("/start")
def start_page():
    mobile = request.form.get("mobile", "")
    try:
        verification = start_verification(mobile, request_id=f"login:{request.form['nonce']}",
                                          requester=request.remote_addr)
    except Throttled as exc:  # the code of the call before, if any, still works
        return page(f"{exc.problem.split(';')[0].capitalize()}: try again in {math.ceil(exc.retry_after)} s.", 429,
                    asking="mobile" in session)
    except InvalidPayload as exc:
        return page(f"Invalid {exc.field}: check it and try again.", 400, asking="mobile" in session)
    session["mobile"], session["shown"] = mobile, verification.mobile  # the number, for the check
    return page(f"Calling {verification.mobile}: enter the code the call reads out.", 202, asking=True)


@app.post("/check")
def check_page():
    if "mobile" not in session:
        return page("Ask for a call first.", 400)
    try:
        answer = check_verification(session["mobile"], request.form.get("code", ""))
    except InvalidPayload as exc:
        return page(f"Invalid {exc.field}: type the 4 to 6 digits you heard.", 400, asking=True)
    rejected = answer.status == "rejected"
    if not rejected:
        session.pop("mobile")  # approved or over: a new code needs a new call
    message = ANSWERS[answer.status].format(mobile=session["shown"], attempts_left=answer.attempts_left)
    return page(message, 200 if answer.status == "approved" else 403, asking=rejected)
