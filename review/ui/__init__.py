"""The Gradio app: tabs, the review page's card and JavaScript, HTTP routes, serving and edge limits."""
