"""One module per FHIR RESTful interaction (http://hl7.org/fhir/R4/http.html)."""
