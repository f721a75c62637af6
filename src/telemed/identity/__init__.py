"""Identity: accounts, access tokens and (in the identity issue) institutions, roles and MFA.

Public API: the names in ``__all__``.
"""

from telemed.identity.accounts import ensure_account, get_account
from telemed.identity.keys import TokenKeys
from telemed.identity.tokens import TokenError, context_from_token, issue_token

__all__ = ["ensure_account", "get_account", "issue_token", "context_from_token", "TokenError", "TokenKeys"]
