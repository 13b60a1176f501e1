"""Container ids and names: 64 hex ids, adjective_surname names, unique per root."""

from __future__ import annotations

import os
import random
import re
import secrets
from typing import Optional

from ._jsonfile import overwrite
from .errors import Conflict, InvalidArgument

ADJECTIVES = """admiring adoring affectionate agitated amazing angry awesome beautiful blissful
bold boring brave busy charming clever compassionate competent condescending confident cool
cranky crazy dazzling determined distracted dreamy eager ecstatic elastic elated elegant
eloquent epic exciting fervent festive flamboyant focused friendly frosty funny gallant gifted
goofy gracious great happy hardcore heuristic hopeful hungry infallible inspiring intelligent
interesting jolly jovial keen kind laughing loving lucid magical modest musing mystifying
naughty nervous nice nifty nostalgic objective optimistic peaceful pedantic pensive practical
priceless quirky quizzical recursing relaxed reverent romantic sad serene sharp silly sleepy
stoic strange stupefied suspicious sweet tender thirsty trusting unruffled upbeat vibrant
vigilant vigorous wizardly wonderful xenodochial youthful zealous zen""".split()

SURNAMES = """agnesi albattani allen almeida antonelli archimedes ardinghelli aryabhata austin
babbage banach banzai bardeen bartik bassi beaver bell benz bhabha bhaskara black blackburn
blackwell bohr booth borg bose bouman boyd brahmagupta brattain brown buck burnell cannon
carson cartwright carver cerf chandrasekhar chaplygin chatelet chatterjee chaum chebyshev
clarke cohen colden cori cray curie darwin davinci dewdney dhawan diffie dijkstra dirac
driscoll dubinsky easley edison einstein elbakyan elgamal elion ellis engelbart euclid euler
faraday feistel fermat fermi feynman franklin gagarin galileo galois ganguly gates gauss
germain goldberg goldstine goldwasser golick goodall gould greider grothendieck haibt hamilton
haslett hawking heisenberg hellman hermann herschel hertz heyrovsky hodgkin hofstadter hoover
hopper hugle hypatia ishizaka jackson jang jemison jennings jepsen johnson joliot jones kalam
kapitsa kare keldysh keller kepler khayyam khorana kilby kirch knuth kowalevski lalande lamarr
lamport leakey leavitt lederberg lehmann lewin lichterman liskov lovelace lumiere mahavira
margulis matsumoto maxwell mayer mccarthy mcclintock mclaren mclean mcnulty meitner mendel
mendeleev meninsky merkle mestorf mirzakhani montalcini moore morse moser murdock napier nash
neumann newton nightingale nobel noether northcutt noyce panini pare pascal pasteur payne
perlman pike poincare poitras proskuriakova ptolemy raman ramanujan rhodes ride ritchie
robinson roentgen rosalind rubin saha sammet sanderson satoshi shamir shannon shaw shirley
shockley shtern sinoussi snyder solomon spence stonebraker sutherland swanson swartz swirles
taussig tesla tharp thompson torvalds tu turing varahamihira vaughan villani visvesvaraya
volhard wescoff wilbur wiles williams williamson wilson wing wozniak wright wu yalow yonath
zhukovsky""".split()

NAME_RE = re.compile(r"/?[a-zA-Z0-9][a-zA-Z0-9_.-]*")


def new_id() -> str:
    return secrets.token_hex(32)


def check_name(name: str) -> str:
    name = name.lstrip("/")
    if not NAME_RE.fullmatch("/" + name) or len(name) > 253:
        raise InvalidArgument(
            f"invalid container name {name!r}: only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed")
    return name


def claim(names_dir: str, name: str, cid: str, *, link_to: Optional[str] = None) -> None:
    """Register `name` for `cid`, atomically across processes.  With
    `link_to` (a file holding the id, in the container's directory) the
    name is a hard link to it: no file of its own to make and delete."""
    path = os.path.join(names_dir, name)
    try:
        if link_to is not None:
            os.link(link_to, path)
            return
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
    except FileExistsError:
        other = lookup(names_dir, name) or "?"
        raise Conflict(f'the container name "/{name}" is already in use by container '
                       f'"{other}". Remove or rename that container to reuse the name') from None
    try:
        os.write(fd, cid.encode())
    finally:
        os.close(fd)


def claim_generated(names_dir: str, cid: str, *, link_to: Optional[str] = None) -> str:
    rng = random.SystemRandom()
    for attempt in range(100):
        name = f"{rng.choice(ADJECTIVES)}_{rng.choice(SURNAMES)}"
        if attempt >= 10:
            name += str(rng.randint(0, 99))
        try:
            claim(names_dir, name, cid, link_to=link_to)
            return name
        except Conflict:
            continue
    raise Conflict("could not find a free container name")


def write_id_file(path: str, cid: str) -> str:
    """The container directory's `id` file, which its names link to
    (rewritten in place in a reused directory)."""
    overwrite(path, cid.encode())
    return path


def lookup(names_dir: str, name: str):
    try:
        with open(os.path.join(names_dir, name.lstrip("/"))) as f:
            return f.read().strip()
    except (FileNotFoundError, NotADirectoryError):
        return None


def release(names_dir: str, name: str, cid: str) -> None:
    if lookup(names_dir, name) == cid:
        try:
            os.unlink(os.path.join(names_dir, name))
        except FileNotFoundError:
            pass
