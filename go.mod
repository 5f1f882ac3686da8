module azure-openai-proxy

go 1.26
