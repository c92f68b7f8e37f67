"""The Zoho CRM side: configuration, client, credits."""
