"""Skills the agent learns from complex tasks and reuses (SKILL.md files + an embedding index)."""

from agent.skills.document import Skill, SkillFormatError
from agent.skills.library import SkillLibrary

__all__ = ["Skill", "SkillFormatError", "SkillLibrary"]
