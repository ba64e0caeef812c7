"""Forms file loading (clear errors naming file, form and key) and the lead field mapping."""

from pathlib import Path

import pytest

from app.forms import (
    BUILTIN_FORMS,
    Entity,
    Form,
    FormsError,
    canonical_fields,
    load_forms,
    map_lead,
    map_submission,
    missing_required,
    utm_of,
)


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "forms.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_without_a_file_only_the_builtin_contact_lead_form_exists() -> None:
    forms = load_forms(None)
    assert list(forms) == ["contact"]
    assert forms["contact"].entity == "lead"
    assert forms["contact"].required == ("phone|email",)


def test_a_forms_file_declares_the_forms(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
[forms.callback]
redirect_url = "https://example.com/thanks"
title = "Callback: {name}"
required = ["phone"]
[forms.callback.defaults]
SOURCE_ID = "CALLBACK"
ASSIGNED_BY_ID = 7
[forms.callback.fields]
city = "UF_CRM_CITY"
""",
    )
    forms = load_forms(path)
    assert list(forms) == ["callback"]
    form = forms["callback"]
    assert form.redirect_url == "https://example.com/thanks"
    assert form.defaults == {"SOURCE_ID": "CALLBACK", "ASSIGNED_BY_ID": 7}
    assert form.fields == {"city": "UF_CRM_CITY"}


def test_trace_ids_are_off_unless_a_form_opts_in(tmp_path: Path) -> None:
    # A numeric trace links the record to that existing trace; getTrace() never returns one.
    assert BUILTIN_FORMS["contact"].trace_ids is False
    path = write(tmp_path, "[forms.public]\n[forms.crm_widget]\ntrace_ids = true\n")
    forms = load_forms(path)
    assert (forms["public"].trace_ids, forms["crm_widget"].trace_ids) == (False, True)


@pytest.mark.parametrize(
    ("text", "names"),
    [
        ("[forms.order]\ntrace_ids = 'maybe'\n", ["[forms.order]", "trace_ids"]),
        ("[forms.order]\nentity = 'lead'\ncolour = 'red'\n", ["[forms.order]", "colour"]),
        ("[forms.order]\nredirect_url = 'thanks.html'\n", ["[forms.order]", "redirect_url"]),
        ("[forms.order]\ntitle = '{name.upper}'\n", ["[forms.order]", "title"]),
        ("[forms.order.defaults]\nsource_id = 'WEB'\n", ["[forms.order]", "defaults", "source_id"]),
        ("[forms.order.defaults]\nORIGIN_ID = 'x'\n", ["[forms.order]", "ORIGIN_ID"]),
        ("[forms.order.fields]\nbudget = 'opportunity'\n", ["[forms.order]", "fields"]),
        ("[forms.order]\nentity = 'invoice'\n", ["[forms.order]", "entity"]),
        ("[forms.order]\nrequired = ['a||b']\n", ["[forms.order]", "required"]),
        ("[forms.'bad id!']\n", ["bad id!"]),
        ("[forms]\n", ["declares no forms"]),
        ("[form.x]\n", ["top-level key", "form"]),
        ("not toml = = =", ["not valid TOML"]),
    ],
)
def test_a_bad_forms_file_names_the_file_the_form_and_the_key(
    tmp_path: Path, text: str, names: list[str]
) -> None:
    path = write(tmp_path, text)
    with pytest.raises(FormsError) as err:
        load_forms(path)
    message = str(err.value)
    assert str(path) in message
    for name in names:
        assert name in message


def test_lead_mapping_of_standard_fields() -> None:
    form = BUILTIN_FORMS["contact"]
    values = {
        "name": ["Ann"],
        "last_name": ["Example"],
        "phone": ["+49 170 1234567"],
        "email": ["ann@example.com", "ann2@example.com"],
        "message": ["Call me\nplease"],
        "company": ["ACME"],
        "utm_source": ["Newsletter"],
        "colour": ["red"],
        "size": ["L", "XL"],
        "_gotcha": [""],
        "empty": [""],
    }
    crm = map_lead(form, values, trace_utm={"utm_source": "google", "utm_medium": "cpc"})
    assert crm == {
        "TITLE": "Ann Example — contact",  # who wrote, through which form
        "NAME": "Ann",
        "LAST_NAME": "Example",
        "PHONE": [{"VALUE": "+49 170 1234567", "VALUE_TYPE": "WORK"}],
        "EMAIL": [
            {"VALUE": "ann@example.com", "VALUE_TYPE": "WORK"},
            {"VALUE": "ann2@example.com", "VALUE_TYPE": "WORK"},
        ],
        "COMPANY_TITLE": "ACME",
        # The form carries UTM tags: the whole set is the form's, none from the trace's visit.
        "UTM_SOURCE": "Newsletter",
        "COMMENTS": "Call me\nplease\n\ncolour: red\nsize: L, XL",
    }


def test_defaults_then_standard_then_mapped_fields_win_in_that_order() -> None:
    form = Form(
        id="order",
        title="Order from {name} ({city})",
        defaults={"SOURCE_ID": "WEB", "NAME": "Anonymous", "OPPORTUNITY": 0},
        fields={"budget": "OPPORTUNITY", "city": "UF_CRM_CITY"},
    )
    crm = map_lead(form, {"name": ["Bo"], "budget": ["1500"], "city": ["Riga"]}, trace_utm={})
    assert crm["SOURCE_ID"] == "WEB"
    assert crm["NAME"] == "Bo"
    assert crm["OPPORTUNITY"] == "1500"
    assert crm["UF_CRM_CITY"] == "Riga"
    assert crm["TITLE"] == "Order from Bo (Riga)"
    assert "COMMENTS" not in crm


def test_title_field_overrides_the_template_and_missing_names_render_empty() -> None:
    form = Form(id="f", title="{form}: {nothing}")
    assert map_lead(form, {}, trace_utm={})["TITLE"] == "f:"
    assert map_lead(form, {"title": ["Mine"]}, trace_utm={})["TITLE"] == "Mine"


@pytest.mark.parametrize(
    ("required", "values", "errors"),
    [
        (("phone|email",), {"phone": ["123456"]}, {}),
        (("phone|email",), {"email": ["a@b.co"]}, {}),
        (("phone|email",), {"phone": [" "]}, {"phone|email": "one of phone, email is required"}),
        (("name", "phone|email"), {"email": ["a@b.co"]}, {"name": "this field is required"}),
        ((), {}, {}),
    ],
)
def test_required_fields_and_alternatives(
    required: tuple[str, ...], values: dict[str, list[str]], errors: dict[str, str]
) -> None:
    assert missing_required(Form(id="f", required=required), values) == errors


def test_standard_names_are_understood_in_any_case_and_replyto_is_the_email() -> None:
    form = Form(id="f", fields={"Phone": "UF_CRM_PHONE_RAW"}, honeypot="Email2")
    values = {
        "EMAIL": ["a@example.com"],
        "_replyto": ["b@example.com"],
        "Name": ["Ann"],
        "Phone": ["+1555"],  # the form maps this spelling itself: kept
        "Email2": [""],  # the honeypot: kept
        "City": ["Riga"],
    }
    assert canonical_fields(form, values) == {
        "email": ["a@example.com", "b@example.com"],
        "name": ["Ann"],
        "Phone": ["+1555"],
        "Email2": [""],
        "City": ["Riga"],
    }


def test_a_default_title_names_who_wrote_and_the_subject_wins_over_it() -> None:
    form = Form(id="callback")
    assert map_lead(form, {"name": ["Bo"]}, trace_utm={})["TITLE"] == "Bo — callback"
    assert map_lead(form, {"company": ["ACME"]}, trace_utm={})["TITLE"] == "ACME — callback"
    assert map_lead(form, {}, trace_utm={})["TITLE"] == "Website request: callback"
    subject = {"name": ["Bo"], "_subject": ["Pricing"]}
    assert map_lead(form, subject, trace_utm={})["TITLE"] == "Pricing"


def test_source_id_is_web_unless_the_form_sets_it() -> None:
    values = {"phone": ["+15550001"]}
    crm = map_submission(Form(id="f"), values, trace_utm={})
    assert crm["records"]["lead"]["SOURCE_ID"] == "WEB"  # type: ignore[index]
    own = Form(id="f", defaults={"SOURCE_ID": "CALLBACK"})
    crm = map_submission(own, values, trace_utm={})
    assert crm["records"]["lead"]["SOURCE_ID"] == "CALLBACK"  # type: ignore[index]
    deal = map_submission(Form(id="d", entity=Entity.DEAL), values, trace_utm={})
    records = deal["records"]
    assert records["deal"]["SOURCE_ID"] == records["contact"]["SOURCE_ID"] == "WEB"  # type: ignore[index]


def test_the_utm_set_comes_whole_from_one_visit() -> None:
    trace = {"utm_source": "google", "utm_medium": "cpc", "utm_campaign": "spring"}
    assert utm_of({"utm_campaign": ["summer"]}, trace) == {"utm_campaign": "summer"}
    assert utm_of({}, trace) == trace


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("[forms.a]\ntittle = 'x'\n", "tittle: unknown key; did you mean 'title'?"),
        ("[forms.a]\nredirect = 'x'\n", "did you mean 'redirect_url'?"),
        ("[forms.a]\nfoo_bar = 1\n", "known keys: allowed_origins"),
        ("[forms.a]\nrequired = 'phone'\n", 'must be a list like ["a", "b"], not \'phone\''),
        ("[forms.a]\nentity = 'invoice'\n", "is 'invoice'; use one of 'lead', 'deal'"),
        ("[forms.a]\ncontact = 'maybe'\n", "is 'maybe'; use one of 'find_or_create'"),
        ("[forms.a]\nmin_fill_seconds = 'abc'\n", "not 'abc'"),
    ],
)
def test_forms_file_mistakes_are_told_in_plain_words_with_the_text_that_was_wrong(
    tmp_path: Path, text: str, says: str
) -> None:
    with pytest.raises(FormsError) as err:
        load_forms(write(tmp_path, text))
    message = str(err.value)
    assert says in message
    assert "Input should be" not in message and "Extra inputs" not in message
