# webapp_django.py: Django views that verify a number by voice, holding no ihuyi secret
from django.http import JsonResponse
from django.urls import path
from django.views.decorators.http import require_POST

from tasks.producer import InvalidPayload, Throttled, check_verification, start_verification


@require_POST
def send_login_code(request):
    try:
        # The form's one-time nonce as request_id: a double submit starts one verification, one call.
        # The client's address as requester: one client cannot have a thousand numbers called.
        verification = start_verification(request.POST.get("mobile", ""), request_id=f"login:{request.POST['nonce']}",
                                          requester=request.META.get("REMOTE_ADDR"))
    except Throttled as exc:  # before InvalidPayload, which it is a kind of
        return JsonResponse({"error": str(exc), "retry_after": round(exc.retry_after)}, status=429)
    except InvalidPayload as exc:
        return JsonResponse({"error": f"invalid {exc.field}"}, status=400)
    return JsonResponse({"verification_id": verification.id, "expires_at": verification.expires_at}, status=202)


@require_POST
def check_login_code(request):
    # In your app the number comes from the session that asked for the code, not from this form.
    try:
        answer = check_verification(request.POST.get("mobile", ""), request.POST.get("code", ""))
    except InvalidPayload as exc:
        return JsonResponse({"error": f"invalid {exc.field}"}, status=400)
    status = 200 if answer.status == "approved" else 403  # rejected, expired, locked or not_found
    return JsonResponse({"status": answer.status, "attempts_left": answer.attempts_left}, status=status)


urlpatterns = [path("login/voice-code", send_login_code), path("login/check", check_login_code)]  # your urls.py
