from services.agent.main import run

run()
