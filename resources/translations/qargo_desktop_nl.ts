<?xml version="1.0" encoding="utf-8"?>
<!DOCTYPE TS>
<TS version="2.1" language="nl_NL" sourcelanguage="en_GB">
<context>
    <name>ConnectionState</name>
    <message>
        <source>Starting...</source>
        <translation>Bezig met starten...</translation>
    </message>
    <message>
        <source>Signing in...</source>
        <translation>Bezig met aanmelden...</translation>
    </message>
    <message>
        <source>Signed out</source>
        <translation>Afgemeld</translation>
    </message>
    <message>
        <source>Online</source>
        <translation>Online</translation>
    </message>
    <message>
        <source>Offline</source>
        <translation>Offline</translation>
    </message>
    <message>
        <source>Sign-in expired</source>
        <translation>Aanmelding verlopen</translation>
    </message>
</context>
<context>
    <name>DetailPane</name>
    <message>
        <source>Sign in as the mailbox in the browser so that Qargo can use it</source>
        <translation>Meld u in de browser aan als de mailbox, zodat Qargo hem kan gebruiken</translation>
    </message>
    <message>
        <source>Sign in as the mailbox again to renew Qargo&apos;s access</source>
        <translation>Meld u opnieuw aan als de mailbox om de toegang van Qargo te vernieuwen</translation>
    </message>
    <message>
        <source>Clear the failed link so that the mailbox can be authorised again</source>
        <translation>Wis de mislukte koppeling, zodat de mailbox opnieuw kan worden geautoriseerd</translation>
    </message>
    <message>
        <source>Send a test message and time its way into Qargo</source>
        <translation>Verstuur een testbericht en meet hoe lang het erover doet om in Qargo te komen</translation>
    </message>
    <message>
        <source>Stop your authorisation in progress</source>
        <translation>Stop uw lopende autorisatie</translation>
    </message>
    <message>
        <source>Remove the mailbox from Qargo&apos;s list</source>
        <translation>Verwijder de mailbox uit de lijst van Qargo</translation>
    </message>
    <message>
        <source>Reason</source>
        <translation>Reden</translation>
    </message>
    <message>
        <source>State changed</source>
        <translation>Status gewijzigd</translation>
    </message>
    <message>
        <source>Linked</source>
        <translation>Gekoppeld</translation>
    </message>
    <message>
        <source>Linked by</source>
        <translation>Gekoppeld door</translation>
    </message>
    <message>
        <source>Permissions</source>
        <translation>Machtigingen</translation>
    </message>
    <message>
        <source>Last sync</source>
        <translation>Laatste synchronisatie</translation>
    </message>
    <message>
        <source>Last error</source>
        <translation>Laatste fout</translation>
    </message>
    <message>
        <source>Authorisation</source>
        <translation>Autorisatie</translation>
    </message>
    <message>
        <source>Mailbox id</source>
        <translation>Mailbox-id</translation>
    </message>
    <message>
        <source>Version</source>
        <translation>Versie</translation>
    </message>
    <message>
        <source>Mailbox details</source>
        <translation>Mailboxgegevens</translation>
    </message>
    <message>
        <source>Select a mailbox to see its details, what you can do about it and its history.</source>
        <translation>Selecteer een mailbox om de gegevens, de mogelijke acties en de geschiedenis te zien.</translation>
    </message>
    <message>
        <source>Nothing can be done in this state except refreshing the list.</source>
        <translation>In deze status kunt u alleen de lijst vernieuwen.</translation>
    </message>
    <message>
        <source>{title}:</source>
        <translation>{title}:</translation>
    </message>
    <message>
        <source>History</source>
        <translation>Geschiedenis</translation>
    </message>
    <message>
        <source>Re&amp;try</source>
        <translation>Opn&amp;ieuw proberen</translation>
    </message>
    <message>
        <source>Load the history again</source>
        <translation>De geschiedenis opnieuw laden</translation>
    </message>
    <message>
        <source>Audit trail</source>
        <translation>Auditlogboek</translation>
    </message>
    <message>
        <source>Who did what to this mailbox and when, newest first</source>
        <translation>Wie wat met deze mailbox heeft gedaan en wanneer, nieuwste eerst</translation>
    </message>
    <message>
        <source>The mailbox&apos;s link state</source>
        <translation>De koppelingsstatus van de mailbox</translation>
    </message>
    <message>
        <source>Loading the history...</source>
        <translation>Geschiedenis laden...</translation>
    </message>
    <message>
        <source>Nothing has been recorded yet.</source>
        <translation>Er is nog niets vastgelegd.</translation>
    </message>
    <message>
        <source>No display name</source>
        <translation>Geen weergavenaam</translation>
    </message>
    <message>
        <source>Never</source>
        <translation>Nooit</translation>
    </message>
    <message>
        <source>{relative} ({time})</source>
        <translation>{relative} ({time})</translation>
    </message>
    <message>
        <source>In progress, expires at {time}</source>
        <translation>Bezig, verloopt op {time}</translation>
    </message>
    <message>
        <source>In progress</source>
        <translation>Bezig</translation>
    </message>
    <message>
        <source>{time} ({relative})</source>
        <translation>{time} ({relative})</translation>
    </message>
    <message>
        <source>The history could not be loaded. {problem}</source>
        <translation>De geschiedenis kon niet worden geladen. {problem}</translation>
    </message>
</context>
<context>
    <name>DeviceCodeDialog</name>
    <message>
        <source>Sign in on another device</source>
        <translation>Aanmelden op een ander apparaat</translation>
    </message>
    <message>
        <source>your Qargo super admin account</source>
        <translation>uw Qargo-superbeheerdersaccount</translation>
    </message>
    <message>
        <source>Asking Microsoft for a code...</source>
        <translation>Microsoft om een code vragen...</translation>
    </message>
    <message>
        <source>One more code: allow the mail permissions</source>
        <translation>Nog één code: de mailmachtigingen toestaan</translation>
    </message>
    <message>
        <source>Microsoft gives one code per service. Open the address again on the other device, enter this second code, sign in as {account} and accept the permissions Qargo asks for.</source>
        <translation>Microsoft geeft één code per dienst. Open het adres opnieuw op het andere apparaat, voer deze tweede code in, meld u aan met {account} en accepteer de machtigingen die Qargo vraagt.</translation>
    </message>
    <message>
        <source>On any device with a browser (a phone is fine), open the address below, enter the code and sign in as {account}. This window continues by itself when you are done.</source>
        <translation>Open op een willekeurig apparaat met een browser (een telefoon kan ook) het adres hieronder, voer de code in en meld u aan met {account}. Dit venster gaat vanzelf verder zodra u klaar bent.</translation>
    </message>
    <message>
        <source>1. Open this address:</source>
        <translation>1. Open dit adres:</translation>
    </message>
    <message>
        <source>2. Enter this code:</source>
        <translation>2. Voer deze code in:</translation>
    </message>
    <message>
        <source>Copy &amp;address</source>
        <translation>&amp;Adres kopiëren</translation>
    </message>
    <message>
        <source>&amp;Copy code</source>
        <translation>&amp;Code kopiëren</translation>
    </message>
    <message>
        <source>Sign-in address</source>
        <translation>Aanmeldadres</translation>
    </message>
    <message>
        <source>Sign-in code</source>
        <translation>Aanmeldcode</translation>
    </message>
    <message>
        <source>Asking for a code</source>
        <translation>Code aanvragen</translation>
    </message>
    <message>
        <source>Time left</source>
        <translation>Resterende tijd</translation>
    </message>
    <message>
        <source>Only enter the code on Microsoft&apos;s page you opened yourself. Nobody from Qargo will ask you for it.</source>
        <translation>Voer de code alleen in op de pagina van Microsoft die u zelf hebt geopend. Niemand van Qargo zal u erom vragen.</translation>
    </message>
    <message>
        <source>Stop waiting (Esc)</source>
        <translation>Stoppen met wachten (Esc)</translation>
    </message>
    <message>
        <source>Cancelling...</source>
        <translation>Bezig met annuleren...</translation>
    </message>
    <message>
        <source>The code has expired. Cancel and start again.</source>
        <translation>De code is verlopen. Annuleer en begin opnieuw.</translation>
    </message>
    <message>
        <source>The code expires in {minutes}:{seconds}</source>
        <translation>De code verloopt over {minutes}:{seconds}</translation>
    </message>
    <message>
        <source>Copied</source>
        <translation>Gekopieerd</translation>
    </message>
    <message>
        <source>Cancelling the sign-in...</source>
        <translation>Het aanmelden wordt geannuleerd...</translation>
    </message>
</context>
<context>
    <name>DiagnosticsWindow</name>
    <message>
        <source>Problem</source>
        <translation>Probleem</translation>
    </message>
    <message>
        <source>Warning</source>
        <translation>Waarschuwing</translation>
    </message>
    <message>
        <source>OK</source>
        <translation>OK</translation>
    </message>
    <message>
        <source>Name lookup (DNS)</source>
        <translation>Naam opzoeken (DNS)</translation>
    </message>
    <message>
        <source>Connection (TCP)</source>
        <translation>Verbinding (TCP)</translation>
    </message>
    <message>
        <source>Proxy tunnel (CONNECT)</source>
        <translation>Proxytunnel (CONNECT)</translation>
    </message>
    <message>
        <source>Secure handshake (TLS)</source>
        <translation>Beveiligde handshake (TLS)</translation>
    </message>
    <message>
        <source>Request (HTTP)</source>
        <translation>Aanvraag (HTTP)</translation>
    </message>
    <message>
        <source>Public certificate authority</source>
        <translation>Openbare certificeringsinstantie</translation>
    </message>
    <message>
        <source>The extra CA in the settings</source>
        <translation>De extra CA uit de instellingen</translation>
    </message>
    <message>
        <source>TLS-inspecting proxy</source>
        <translation>Proxy die TLS inspecteert</translation>
    </message>
    <message>
        <source>Unknown certificate authority</source>
        <translation>Onbekende certificeringsinstantie</translation>
    </message>
    <message>
        <source>The services were not checked: their addresses are not known, or checking was turned off.</source>
        <translation>De diensten zijn niet gecontroleerd: hun adressen zijn niet bekend, of het controleren is uitgeschakeld.</translation>
    </message>
    <message>
        <source>Reachable</source>
        <translation>Bereikbaar</translation>
    </message>
    <message>
        <source>Not reachable</source>
        <translation>Niet bereikbaar</translation>
    </message>
    <message>
        <source>Not run</source>
        <translation>Niet uitgevoerd</translation>
    </message>
    <message>
        <source>Failed</source>
        <translation>Mislukt</translation>
    </message>
    <message>
        <source>Certificate</source>
        <translation>Certificaat</translation>
    </message>
    <message>
        <source>Direct connection</source>
        <translation>Rechtstreekse verbinding</translation>
    </message>
    <message>
        <source>Proxy</source>
        <translation>Proxy</translation>
    </message>
    <message>
        <source>Check</source>
        <translation>Controle</translation>
    </message>
    <message>
        <source>Result</source>
        <translation>Resultaat</translation>
    </message>
    <message>
        <source>Time</source>
        <translation>Tijd</translation>
    </message>
    <message>
        <source>What it found</source>
        <translation>Bevinding</translation>
    </message>
    <message>
        <source>What it means:</source>
        <translation>Wat dit betekent:</translation>
    </message>
    <message>
        <source>Setting</source>
        <translation>Instelling</translation>
    </message>
    <message>
        <source>{setting} (from {source})</source>
        <translation>{setting} (uit {source})</translation>
    </message>
    <message>
        <source>Difference</source>
        <translation>Verschil</translation>
    </message>
    <message>
        <source>Measured</source>
        <translation>Gemeten</translation>
    </message>
    <message>
        <source>{offset:+.1f} s, give or take {uncertainty:.1f} s ({samples} answers)</source>
        <translation>{offset:+.1f} s, met een marge van {uncertainty:.1f} s ({samples} antwoorden)</translation>
    </message>
    <message>
        <source>Clock</source>
        <translation>Klok</translation>
    </message>
    <message>
        <source>Keyring</source>
        <translation>Sleutelhanger</translation>
    </message>
    <message>
        <source>Usable</source>
        <translation>Bruikbaar</translation>
    </message>
    <message>
        <source>Not usable</source>
        <translation>Niet bruikbaar</translation>
    </message>
    <message>
        <source>Backend</source>
        <translation>Backend</translation>
    </message>
    <message>
        <source>Why</source>
        <translation>Waarom</translation>
    </message>
    <message>
        <source>Your sign-in (admin)</source>
        <translation>Uw aanmelding (beheerder)</translation>
    </message>
    <message>
        <source>Mailbox accounts</source>
        <translation>Mailboxaccounts</translation>
    </message>
    <message>
        <source>No saved sign-ins were found.</source>
        <translation>Er zijn geen opgeslagen aanmeldingen gevonden.</translation>
    </message>
    <message>
        <source>State</source>
        <translation>Status</translation>
    </message>
    <message>
        <source>No saved sign-ins yet</source>
        <translation>Nog geen opgeslagen aanmeldingen</translation>
    </message>
    <message>
        <source>Kept encrypted on disk</source>
        <translation>Versleuteld op schijf bewaard</translation>
    </message>
    <message>
        <source>Kept in memory only, until the app closes</source>
        <translation>Alleen in het geheugen bewaard, tot de app wordt gesloten</translation>
    </message>
    <message>
        <source>Key kept in</source>
        <translation>Sleutel bewaard in</translation>
    </message>
    <message>
        <source>File</source>
        <translation>Bestand</translation>
    </message>
    <message>
        <source>Accounts</source>
        <translation>Accounts</translation>
    </message>
    <message>
        <source>none</source>
        <translation>geen</translation>
    </message>
    <message>
        <source>expired</source>
        <translation>verlopen</translation>
    </message>
    <message>
        <source>valid</source>
        <translation>geldig</translation>
    </message>
    <message>
        <source>until {time}</source>
        <translation>tot {time}</translation>
    </message>
    <message>
        <source>Access for</source>
        <translation>Toegang voor</translation>
    </message>
    <message>
        <source>Sign-in last renewed</source>
        <translation>Aanmelding laatst vernieuwd</translation>
    </message>
    <message>
        <source>not loaded</source>
        <translation>niet geladen</translation>
    </message>
    <message>
        <source>App</source>
        <translation>App</translation>
    </message>
    <message>
        <source>Operating system</source>
        <translation>Besturingssysteem</translation>
    </message>
    <message>
        <source>Versions</source>
        <translation>Versies</translation>
    </message>
    <message>
        <source>Folders</source>
        <translation>Mappen</translation>
    </message>
    <message>
        <source>No warnings or errors in the log.</source>
        <translation>Geen waarschuwingen of fouten in het logboek.</translation>
    </message>
    <message>
        <source>When</source>
        <translation>Wanneer</translation>
    </message>
    <message>
        <source>Level</source>
        <translation>Niveau</translation>
    </message>
    <message>
        <source>What happened (newest first)</source>
        <translation>Wat er gebeurde (nieuwste eerst)</translation>
    </message>
    <message>
        <source>Checking...</source>
        <translation>Bezig met controleren...</translation>
    </message>
    <message>
        <source>Checking: {step}...</source>
        <translation>Controleren: {step}...</translation>
    </message>
    <message>
        <source>The checks could not run: {problem}</source>
        <translation>De controles konden niet worden uitgevoerd: {problem}</translation>
    </message>
    <message>
        <source>The checks stopped unexpectedly: {problem}</source>
        <translation>De controles zijn onverwacht gestopt: {problem}</translation>
    </message>
    <message>
        <source>Not checked yet.</source>
        <translation>Nog niet gecontroleerd.</translation>
    </message>
    <message numerus="yes">
        <source>%n problem(s) found</source>
        <translation>
            <numerusform>%n probleem gevonden</numerusform>
            <numerusform>%n problemen gevonden</numerusform>
        </translation>
    </message>
    <message numerus="yes">
        <source>No problems, %n warning(s)</source>
        <translation>
            <numerusform>Geen problemen, %n waarschuwing</numerusform>
            <numerusform>Geen problemen, %n waarschuwingen</numerusform>
        </translation>
    </message>
    <message>
        <source>Nothing wrong found</source>
        <translation>Geen problemen gevonden</translation>
    </message>
    <message>
        <source>{verdict}. Checked {when}, in {seconds:.1f} s.</source>
        <translation>{verdict}. Gecontroleerd op {when}, in {seconds:.1f} s.</translation>
    </message>
    <message>
        <source>The report was copied.</source>
        <translation>Het rapport is gekopieerd.</translation>
    </message>
    <message>
        <source>Saving the support bundle...</source>
        <translation>Bezig met opslaan van het ondersteuningspakket...</translation>
    </message>
    <message>
        <source>The support bundle could not be saved: {problem}</source>
        <translation>Het ondersteuningspakket kon niet worden opgeslagen: {problem}</translation>
    </message>
    <message>
        <source>The folder could not be opened. It is {folder}</source>
        <translation>De map kon niet worden geopend. Het is {folder}</translation>
    </message>
    <message>
        <source>{app}: diagnostics</source>
        <translation>{app}: diagnose</translation>
    </message>
    <message>
        <source>Diagnostics</source>
        <translation>Diagnose</translation>
    </message>
    <message>
        <source>Working</source>
        <translation>Bezig</translation>
    </message>
    <message>
        <source>Findings, worst first</source>
        <translation>Bevindingen, ernstigste eerst</translation>
    </message>
    <message>
        <source>The evidence</source>
        <translation>Het bewijsmateriaal</translation>
    </message>
    <message>
        <source>Send the support bundle to Qargo Support</source>
        <translation>Stuur het ondersteuningspakket naar Qargo Support</translation>
    </message>
    <message>
        <source>&amp;Bundle:</source>
        <translation>&amp;Pakket:</translation>
    </message>
    <message>
        <source>Where the support bundle was saved</source>
        <translation>Waar het ondersteuningspakket is opgeslagen</translation>
    </message>
    <message>
        <source>&amp;Open folder</source>
        <translation>&amp;Map openen</translation>
    </message>
    <message>
        <source>Show the bundle in the file manager</source>
        <translation>Het pakket tonen in de bestandsbeheerder</translation>
    </message>
    <message>
        <source>Copy &amp;path</source>
        <translation>Pa&amp;d kopiëren</translation>
    </message>
    <message>
        <source>A support bundle holds this report and the app&apos;s logs: no passwords or tokens, but account names, mailbox addresses and this computer&apos;s name and folders.</source>
        <translation>Een ondersteuningspakket bevat dit rapport en de logboeken van de app: geen wachtwoorden of tokens, maar wel accountnamen, mailboxadressen en de naam en mappen van deze computer.</translation>
    </message>
    <message>
        <source>&amp;Run again</source>
        <translation>&amp;Opnieuw uitvoeren</translation>
    </message>
    <message>
        <source>Check everything again</source>
        <translation>Alles opnieuw controleren</translation>
    </message>
    <message>
        <source>&amp;Copy report</source>
        <translation>Rapport &amp;kopiëren</translation>
    </message>
    <message>
        <source>Copy the report as text</source>
        <translation>Het rapport als tekst kopiëren</translation>
    </message>
    <message>
        <source>&amp;Save support bundle...</source>
        <translation>Ondersteuningspakket op&amp;slaan...</translation>
    </message>
    <message>
        <source>Save the report and the logs in one zip file</source>
        <translation>Het rapport en de logboeken in één zipbestand opslaan</translation>
    </message>
    <message>
        <source>Contact Qargo S&amp;upport</source>
        <translation>&amp;Contact opnemen met Qargo Support</translation>
    </message>
    <message>
        <source>Prepare a support bundle and see where to send it</source>
        <translation>Een ondersteuningspakket voorbereiden en zien waar u het naartoe stuurt</translation>
    </message>
    <message>
        <source>Close</source>
        <translation>Sluiten</translation>
    </message>
    <message>
        <source>Services</source>
        <translation>Diensten</translation>
    </message>
    <message>
        <source>Proxy and clock</source>
        <translation>Proxy en klok</translation>
    </message>
    <message>
        <source>Keyring and sign-ins</source>
        <translation>Sleutelhanger en aanmeldingen</translation>
    </message>
    <message>
        <source>Recent problems</source>
        <translation>Recente problemen</translation>
    </message>
    <message>
        <source>Full report</source>
        <translation>Volledig rapport</translation>
    </message>
</context>
<context>
    <name>FirstRunPage</name>
    <message>
        <source>{app} is not set up yet</source>
        <translation>{app} is nog niet ingesteld</translation>
    </message>
    <message>
        <source>To work with your organisation, the app needs the settings of your Microsoft 365 tenant and of Qargo. These are missing:</source>
        <translation>Om met uw organisatie te werken, heeft de app de instellingen van uw Microsoft 365-tenant en van Qargo nodig. Deze ontbreken:</translation>
    </message>
    <message>
        <source>You can also try every feature now against the built-in sandbox: a simulated organisation on this computer. Nothing leaves this computer.</source>
        <translation>U kunt ook nu al elke functie uitproberen in de ingebouwde sandbox: een gesimuleerde organisatie op deze computer. Er verlaat niets deze computer.</translation>
    </message>
    <message>
        <source>Use the built-in &amp;sandbox</source>
        <translation>De ingebouwde &amp;sandbox gebruiken</translation>
    </message>
    <message>
        <source>{key} (or the environment variable {variable})</source>
        <translation>{key} (of de omgevingsvariabele {variable})</translation>
    </message>
    <message>
        <source>Add them to the settings file {file}, or ask Qargo Support for a ready-made settings file, then start the app again.</source>
        <translation>Voeg ze toe aan het instellingenbestand {file}, of vraag Qargo Support om een kant-en-klaar instellingenbestand, en start de app daarna opnieuw.</translation>
    </message>
    <message>
        <source>Add them to the settings file, or ask Qargo Support for a ready-made settings file, then start the app again.</source>
        <translation>Voeg ze toe aan het instellingenbestand, of vraag Qargo Support om een kant-en-klaar instellingenbestand, en start de app daarna opnieuw.</translation>
    </message>
    <message>
        <source>Missing settings</source>
        <translation>Ontbrekende instellingen</translation>
    </message>
</context>
<context>
    <name>LinkActions</name>
    <message>
        <source>{address}: another action is still running.</source>
        <translation>{address}: er loopt nog een andere actie.</translation>
    </message>
    <message>
        <source>Another action is still running.</source>
        <translation>Er loopt nog een andere actie.</translation>
    </message>
    <message>
        <source>Reauthorise {address}</source>
        <translation>{address} opnieuw autoriseren</translation>
    </message>
    <message>
        <source>Authorise {address}</source>
        <translation>{address} autoriseren</translation>
    </message>
    <message>
        <source>Sign in as {address} in your browser</source>
        <translation>Meld u in uw browser aan als {address}</translation>
    </message>
    <message>
        <source>A Microsoft sign-in page is opening in your browser. Choose or sign in as {address} (not your own admin account) and accept the permissions Qargo asks for. If the browser is signed in as someone else, copy the link below into a private window.</source>
        <translation>Er wordt een aanmeldpagina van Microsoft geopend in uw browser. Kies {address} of meld u daarmee aan (niet met uw eigen beheerdersaccount) en accepteer de machtigingen die Qargo vraagt. Is de browser aangemeld als iemand anders, kopieer de link hieronder dan naar een privévenster.</translation>
    </message>
    <message>
        <source>Reauthorise {address} on another device</source>
        <translation>{address} opnieuw autoriseren op een ander apparaat</translation>
    </message>
    <message>
        <source>Authorise {address} on another device</source>
        <translation>{address} autoriseren op een ander apparaat</translation>
    </message>
    <message>
        <source>{address} is linked.</source>
        <translation>{address} is gekoppeld.</translation>
    </message>
    <message>
        <source>{address}: authorisation cancelled.</source>
        <translation>{address}: autorisatie geannuleerd.</translation>
    </message>
    <message>
        <source>The authorisation failed.</source>
        <translation>De autorisatie is mislukt.</translation>
    </message>
    <message>
        <source>Reset the API link status, then authorise again.</source>
        <translation>Reset de API-koppelingsstatus en autoriseer daarna opnieuw.</translation>
    </message>
    <message>
        <source>Try again</source>
        <translation>Opnieuw proberen</translation>
    </message>
    <message>
        <source>{address}: the authorisation in progress was started elsewhere; it ends by itself when it expires.</source>
        <translation>{address}: de lopende autorisatie is elders gestart; die stopt vanzelf zodra ze verloopt.</translation>
    </message>
    <message>
        <source>Removed {address}.</source>
        <translation>{address} verwijderd.</translation>
    </message>
    <message>
        <source>Added {address}. Authorise it to link it.</source>
        <translation>{address} toegevoegd. Autoriseer de mailbox om hem te koppelen.</translation>
    </message>
    <message>
        <source>{address} is now Unlinked.</source>
        <translation>{address} is nu Niet gekoppeld.</translation>
    </message>
    <message>
        <source>{address} is now changed.</source>
        <translation>{address} is nu gewijzigd.</translation>
    </message>
    <message>
        <source>{address}: someone else changed this mailbox first. The row now shows its current state; check it and try again if still needed.</source>
        <translation>{address}: iemand anders heeft deze mailbox eerder gewijzigd. De rij toont nu de huidige status; controleer die en probeer het zo nodig opnieuw.</translation>
    </message>
</context>
<context>
    <name>LogView</name>
    <message>
        <source>Everything (debug detail too)</source>
        <extracomment>The level filter&apos;s choices: the lowest level shown, and its words.</extracomment>
        <translation>Alles (ook foutopsporingsdetails)</translation>
    </message>
    <message>
        <source>Information, warnings and errors</source>
        <translation>Informatie, waarschuwingen en fouten</translation>
    </message>
    <message>
        <source>Warnings and errors</source>
        <translation>Waarschuwingen en fouten</translation>
    </message>
    <message>
        <source>Errors only</source>
        <translation>Alleen fouten</translation>
    </message>
    <message>
        <source>The log folder could not be opened. It is {folder}</source>
        <translation>De logmap kon niet worden geopend. Het is {folder}</translation>
    </message>
    <message>
        <source>{shown} of the last {kept} entries (the app keeps {capacity})</source>
        <translation>{shown} van de laatste {kept} regels (de app bewaart er {capacity})</translation>
    </message>
    <message>
        <source>{app}: log</source>
        <translation>{app}: logboek</translation>
    </message>
    <message>
        <source>&amp;Show:</source>
        <translation>&amp;Tonen:</translation>
    </message>
    <message>
        <source>Which entries to show</source>
        <translation>Welke regels worden getoond</translation>
    </message>
    <message>
        <source>Log entries</source>
        <translation>Logregels</translation>
    </message>
    <message>
        <source>The app&apos;s recent log, newest last. Passwords, tokens and codes are removed.</source>
        <translation>Het recente logboek van de app, nieuwste onderaan. Wachtwoorden, tokens en codes zijn verwijderd.</translation>
    </message>
    <message>
        <source>&amp;Copy</source>
        <translation>&amp;Kopiëren</translation>
    </message>
    <message>
        <source>Copy the entries shown</source>
        <translation>De getoonde regels kopiëren</translation>
    </message>
    <message>
        <source>Open log &amp;folder</source>
        <translation>Log&amp;map openen</translation>
    </message>
    <message>
        <source>Show the log files, with older entries, in the file manager</source>
        <translation>De logbestanden, met oudere regels, tonen in de bestandsbeheerder</translation>
    </message>
    <message>
        <source>Close</source>
        <translation>Sluiten</translation>
    </message>
</context>
<context>
    <name>MailboxTableModel</name>
    <message>
        <source>Mailbox</source>
        <translation>Mailbox</translation>
    </message>
    <message>
        <source>Display name</source>
        <translation>Weergavenaam</translation>
    </message>
    <message>
        <source>Status</source>
        <translation>Status</translation>
    </message>
    <message>
        <source>Last sync</source>
        <translation>Laatste sync</translation>
    </message>
    <message>
        <source>Last error</source>
        <translation>Laatste fout</translation>
    </message>
    <message>
        <source>The mailbox&apos;s email address</source>
        <translation>Het e-mailadres van de mailbox</translation>
    </message>
    <message>
        <source>The name shown for the mailbox</source>
        <translation>De naam die voor de mailbox wordt getoond</translation>
    </message>
    <message>
        <source>Whether Qargo can read and send this mailbox&apos;s mail</source>
        <translation>Of Qargo de mail van deze mailbox kan lezen en versturen</translation>
    </message>
    <message>
        <source>When Qargo last synchronised mail from this mailbox</source>
        <translation>Wanneer Qargo voor het laatst mail van deze mailbox heeft gesynchroniseerd</translation>
    </message>
    <message>
        <source>The last problem Qargo recorded for this mailbox</source>
        <translation>Het laatste probleem dat Qargo voor deze mailbox heeft vastgelegd</translation>
    </message>
    <message>
        <source>empty</source>
        <extracomment>Returns the :class:`Mailbox` of a row.</extracomment>
        <translation>leeg</translation>
    </message>
    <message>
        <source>Qargo has not synchronised mail from this mailbox yet.</source>
        <translation>Qargo heeft nog geen mail van deze mailbox gesynchroniseerd.</translation>
    </message>
    <message>
        <source>Last sync: {time} (local time)</source>
        <translation>Laatste synchronisatie: {time} (lokale tijd)</translation>
    </message>
</context>
<context>
    <name>MainWindow</name>
    <message>
        <source>Starting...</source>
        <extracomment>Opens the sign-in page; ``None`` means the system browser. Tests set a script. Opens a folder in the file manager (Help &gt; Open log folder). Tests replace it. Help &gt; Diagnostics and Help &gt; Show log: one window of each.</extracomment>
        <translation>Bezig met starten...</translation>
    </message>
    <message>
        <source>&amp;File</source>
        <translation>&amp;Bestand</translation>
    </message>
    <message>
        <source>&amp;View</source>
        <translation>Beel&amp;d</translation>
    </message>
    <message>
        <source>&amp;Mailbox</source>
        <translation>&amp;Mailbox</translation>
    </message>
    <message>
        <source>&amp;Help</source>
        <translation>&amp;Help</translation>
    </message>
    <message>
        <source>&amp;Refresh</source>
        <translation>&amp;Vernieuwen</translation>
    </message>
    <message>
        <source>Load the list again</source>
        <translation>De lijst opnieuw laden</translation>
    </message>
    <message>
        <source>&amp;Add mailbox...</source>
        <translation>Mailbox &amp;toevoegen...</translation>
    </message>
    <message>
        <source>Add a Microsoft 365 mailbox for Qargo to read and send</source>
        <translation>Een Microsoft 365-mailbox toevoegen die Qargo leest en waarmee het verstuurt</translation>
    </message>
    <message>
        <source>&amp;Preferences...</source>
        <translation>V&amp;oorkeuren...</translation>
    </message>
    <message>
        <source>Language, theme, refresh, sign-in time and network</source>
        <translation>Taal, thema, vernieuwen, aanmeldtijd en netwerk</translation>
    </message>
    <message>
        <source>Sign &amp;out</source>
        <translation>&amp;Afmelden</translation>
    </message>
    <message>
        <source>Forget your sign-in on this computer</source>
        <translation>Uw aanmelding op deze computer vergeten</translation>
    </message>
    <message>
        <source>&amp;Quit</source>
        <translation>Af&amp;sluiten</translation>
    </message>
    <message>
        <source>Close the window and stop the app</source>
        <translation>Het venster sluiten en de app stoppen</translation>
    </message>
    <message>
        <source>&amp;Find</source>
        <translation>&amp;Zoeken</translation>
    </message>
    <message>
        <source>Search by address or name</source>
        <translation>Zoeken op adres of naam</translation>
    </message>
    <message>
        <source>&amp;Clear search and filter</source>
        <translation>Zoeken en filter &amp;wissen</translation>
    </message>
    <message>
        <source>Show every mailbox again</source>
        <translation>Alle mailboxen weer tonen</translation>
    </message>
    <message>
        <source>&amp;Copy address</source>
        <translation>Adres &amp;kopiëren</translation>
    </message>
    <message>
        <source>Copy the selected mailbox&apos;s address</source>
        <translation>Het adres van de geselecteerde mailbox kopiëren</translation>
    </message>
    <message>
        <source>&amp;Diagnostics...</source>
        <translation>&amp;Diagnose...</translation>
    </message>
    <message>
        <source>Check settings, network, sign-ins and the services</source>
        <translation>Instellingen, netwerk, aanmeldingen en de diensten controleren</translation>
    </message>
    <message>
        <source>Show &amp;log</source>
        <translation>&amp;Logboek tonen</translation>
    </message>
    <message>
        <source>The app&apos;s recent log, live, in a window of its own</source>
        <translation>Het recente logboek van de app, live, in een eigen venster</translation>
    </message>
    <message>
        <source>Authorise on another &amp;device...</source>
        <translation>Autoriseren op een ander a&amp;pparaat...</translation>
    </message>
    <message>
        <source>Sign in as the mailbox with a code, on a phone or another computer, when this computer&apos;s browser cannot be used</source>
        <translation>Meld u met een code aan als de mailbox, op een telefoon of een andere computer, als de browser van deze computer niet bruikbaar is</translation>
    </message>
    <message>
        <source>Open log &amp;folder</source>
        <translation>Log&amp;map openen</translation>
    </message>
    <message>
        <source>Show the app&apos;s log files in the file manager</source>
        <translation>De logbestanden van de app tonen in de bestandsbeheerder</translation>
    </message>
    <message>
        <source>&amp;About {app}</source>
        <translation>&amp;Over {app}</translation>
    </message>
    <message>
        <source>Version, licences and where the app connects</source>
        <translation>Versie, licenties en waarmee de app verbinding maakt</translation>
    </message>
    <message>
        <source>Search by address or name ({shortcut})</source>
        <translation>Zoeken op adres of naam ({shortcut})</translation>
    </message>
    <message>
        <source>Search mailboxes</source>
        <translation>Mailboxen zoeken</translation>
    </message>
    <message>
        <source>Shows only mailboxes whose address or name contains the text</source>
        <translation>Toont alleen mailboxen waarvan het adres of de naam de tekst bevat</translation>
    </message>
    <message>
        <source>&amp;Status:</source>
        <translation>&amp;Status:</translation>
    </message>
    <message>
        <source>Mailboxes</source>
        <translation>Mailboxen</translation>
    </message>
    <message>
        <source>The organisation&apos;s linked mailboxes. Arrow keys choose one; its details and actions are in the pane beside the list. The context menu key lists its actions.</source>
        <translation>De gekoppelde mailboxen van de organisatie. Kies er een met de pijltoetsen; de gegevens en acties staan in het deelvenster naast de lijst. De contextmenutoets toont de acties.</translation>
    </message>
    <message>
        <source>Columns</source>
        <translation>Kolommen</translation>
    </message>
    <message>
        <source>Choose a column to sort the list by it</source>
        <translation>Kies een kolom om de lijst daarop te sorteren</translation>
    </message>
    <message>
        <source>Loading the list</source>
        <translation>De lijst wordt geladen</translation>
    </message>
    <message>
        <source>Running against the built-in sandbox: a simulated organisation on this computer.</source>
        <translation>Werkt met de ingebouwde sandbox: een gesimuleerde organisatie op deze computer.</translation>
    </message>
    <message>
        <source>Copied {address}</source>
        <translation>{address} gekopieerd</translation>
    </message>
    <message>
        <source>Signed in as {user}</source>
        <translation>Aangemeld als {user}</translation>
    </message>
    <message>
        <source>Organisation: {name}</source>
        <translation>Organisatie: {name}</translation>
    </message>
    <message>
        <source>Signed in as {user} (not a super admin)</source>
        <translation>Aangemeld als {user} (geen superbeheerder)</translation>
    </message>
    <message>
        <source>Not signed in</source>
        <translation>Niet aangemeld</translation>
    </message>
    <message>
        <source>Sandbox</source>
        <translation>Sandbox</translation>
    </message>
    <message>
        <source>Environment: {name}</source>
        <translation>Omgeving: {name}</translation>
    </message>
    <message>
        <source>{app} ({environment})</source>
        <translation>{app} ({environment})</translation>
    </message>
    <message>
        <source>Signing in...</source>
        <translation>Bezig met aanmelden...</translation>
    </message>
    <message>
        <source>Waiting for the browser...</source>
        <translation>Wachten op de browser...</translation>
    </message>
    <message>
        <source>Waiting for the other device...</source>
        <translation>Wachten op het andere apparaat...</translation>
    </message>
    <message>
        <source>Sign-in cancelled.</source>
        <translation>Aanmelden geannuleerd.</translation>
    </message>
    <message>
        <source>Your sign-in has expired or was revoked, so the list below may be out of date. Sign in again to continue.</source>
        <translation>Uw aanmelding is verlopen of ingetrokken, dus de lijst hieronder is mogelijk verouderd. Meld u opnieuw aan om verder te gaan.</translation>
    </message>
    <message>
        <source>Sign in again</source>
        <translation>Opnieuw aanmelden</translation>
    </message>
    <message>
        <source>Signing out...</source>
        <translation>Bezig met afmelden...</translation>
    </message>
    <message>
        <source>Signing out did not complete: {problem}</source>
        <translation>Afmelden is niet voltooid: {problem}</translation>
    </message>
    <message numerus="yes">
        <source>%Ln loaded so far</source>
        <translation>
            <numerusform>%Ln tot nu toe geladen</numerusform>
            <numerusform>%Ln tot nu toe geladen</numerusform>
        </translation>
    </message>
    <message>
        <source>The list may be out of date (last refreshed {time}).</source>
        <translation>De lijst is mogelijk verouderd (laatst vernieuwd {time}).</translation>
    </message>
    <message>
        <source>The mailboxes could not be loaded.</source>
        <translation>De mailboxen konden niet worden geladen.</translation>
    </message>
    <message>
        <source>Retry</source>
        <translation>Opnieuw proberen</translation>
    </message>
    <message>
        <source>Offline: list from {time}</source>
        <translation>Offline: lijst van {time}</translation>
    </message>
    <message>
        <source>The Qargo API cannot be reached; the list shown may be out of date.</source>
        <translation>De Qargo-API is niet bereikbaar; de getoonde lijst is mogelijk verouderd.</translation>
    </message>
    <message>
        <source>Sign in again to see the current list.</source>
        <translation>Meld u opnieuw aan om de actuele lijst te zien.</translation>
    </message>
    <message>
        <source>Connection: {state}</source>
        <translation>Verbinding: {state}</translation>
    </message>
    <message>
        <source>Not refreshed yet</source>
        <translation>Nog niet vernieuwd</translation>
    </message>
    <message>
        <source>Refreshed {refreshed}, checked {checked}</source>
        <translation>Vernieuwd: {refreshed}, gecontroleerd: {checked}</translation>
    </message>
    <message>
        <source>Refreshed {refreshed}</source>
        <translation>Vernieuwd: {refreshed}</translation>
    </message>
    <message>
        <source>{text} (may be out of date)</source>
        <translation>{text} (mogelijk verouderd)</translation>
    </message>
    <message>
        <source>List last loaded at {time}</source>
        <translation>Lijst laatst geladen op {time}</translation>
    </message>
    <message>
        <source>Last checked for changes at {time}</source>
        <translation>Laatst op wijzigingen gecontroleerd op {time}</translation>
    </message>
    <message>
        <source>No mailboxes match</source>
        <translation>Geen mailboxen gevonden</translation>
    </message>
    <message>
        <source>Nothing matches the search text and state chosen.</source>
        <translation>Niets komt overeen met de zoektekst en de gekozen status.</translation>
    </message>
    <message>
        <source>Clear search and filter</source>
        <translation>Zoeken en filter wissen</translation>
    </message>
    <message>
        <source>Loading the organisation&apos;s mailboxes...</source>
        <translation>Mailboxen van de organisatie laden...</translation>
    </message>
    <message>
        <source>The mailboxes could not be loaded</source>
        <translation>De mailboxen konden niet worden geladen</translation>
    </message>
    <message>
        <source>No mailboxes yet</source>
        <translation>Nog geen mailboxen</translation>
    </message>
    <message>
        <source>Add the first Microsoft 365 mailbox that Qargo should read and send mail for.</source>
        <translation>Voeg de eerste Microsoft 365-mailbox toe waarvan Qargo mail moet lezen en versturen.</translation>
    </message>
    <message>
        <source>Add mailbox...</source>
        <translation>Mailbox toevoegen...</translation>
    </message>
    <message>
        <source>Not loaded yet</source>
        <translation>Nog niet geladen</translation>
    </message>
    <message>
        <source>Refresh to load the list.</source>
        <translation>Vernieuw om de lijst te laden.</translation>
    </message>
    <message>
        <source>Refresh</source>
        <translation>Vernieuwen</translation>
    </message>
    <message>
        <source>Organisation API: {url}</source>
        <translation>Organisatie-API: {url}</translation>
    </message>
    <message>
        <source>The log folder could not be opened. It is {folder}</source>
        <translation>De logmap kon niet worden geopend. Het is {folder}</translation>
    </message>
    <message>
        <source>The new proxy and certificate settings are used from the next start of the app.</source>
        <translation>De nieuwe proxy- en certificaatinstellingen gelden vanaf de volgende start van de app.</translation>
    </message>
    <message>
        <source>{address} is not in the organisation&apos;s list.</source>
        <translation>{address} staat niet in de lijst van de organisatie.</translation>
    </message>
</context>
<context>
    <name>MessageBar</name>
    <message>
        <source>Information</source>
        <translation>Informatie</translation>
    </message>
    <message>
        <source>Warning</source>
        <translation>Waarschuwing</translation>
    </message>
    <message>
        <source>Error</source>
        <translation>Fout</translation>
    </message>
    <message numerus="yes">
        <source>(%n times)</source>
        <translation>
            <numerusform>(%n keer)</numerusform>
            <numerusform>(%n keer)</numerusform>
        </translation>
    </message>
    <message>
        <source>Dismiss this message</source>
        <translation>Dit bericht sluiten</translation>
    </message>
    <message>
        <source>Dismiss message</source>
        <translation>Bericht sluiten</translation>
    </message>
</context>
<context>
    <name>PreferencesDialog</name>
    <message>
        <source>Preferences</source>
        <translation>Voorkeuren</translation>
    </message>
    <message>
        <source>Problem</source>
        <extracomment>Asks for a PEM file; tests replace it (no native file dialog in tests).</extracomment>
        <translation>Probleem</translation>
    </message>
    <message>
        <source>Saved in {file}</source>
        <translation>Opgeslagen in {file}</translation>
    </message>
    <message>
        <source>Save</source>
        <translation>Opslaan</translation>
    </message>
    <message>
        <source>Appearance</source>
        <translation>Weergave</translation>
    </message>
    <message>
        <source>System language ({language})</source>
        <translation>Systeemtaal ({language})</translation>
    </message>
    <message>
        <source>Language</source>
        <translation>Taal</translation>
    </message>
    <message>
        <source>The language of the window&apos;s words, dates and numbers</source>
        <translation>De taal van de teksten, datums en getallen in het venster</translation>
    </message>
    <message>
        <source>&amp;Language:</source>
        <translation>&amp;Taal:</translation>
    </message>
    <message>
        <source>Follow the system</source>
        <translation>Systeem volgen</translation>
    </message>
    <message>
        <source>Light</source>
        <translation>Licht</translation>
    </message>
    <message>
        <source>Dark</source>
        <translation>Donker</translation>
    </message>
    <message>
        <source>Theme</source>
        <translation>Thema</translation>
    </message>
    <message>
        <source>Light or dark colours, or the system&apos;s choice</source>
        <translation>Lichte of donkere kleuren, of de keuze van het systeem</translation>
    </message>
    <message>
        <source>&amp;Theme:</source>
        <translation>T&amp;hema:</translation>
    </message>
    <message>
        <source>Mailbox list and sign-in</source>
        <translation>Mailboxlijst en aanmelden</translation>
    </message>
    <message>
        <source> s</source>
        <translation> s</translation>
    </message>
    <message>
        <source>Off</source>
        <translation>Uit</translation>
    </message>
    <message>
        <source>Refresh interval in seconds</source>
        <translation>Vernieuwingsinterval in seconden</translation>
    </message>
    <message>
        <source>0 turns automatic refresh off; otherwise 5 or more</source>
        <translation>0 zet automatisch vernieuwen uit; anders 5 of meer</translation>
    </message>
    <message>
        <source>&amp;Refresh the list every:</source>
        <translation>Lijst &amp;vernieuwen elke:</translation>
    </message>
    <message>
        <source>Sign-in time limit in seconds</source>
        <translation>Tijdslimiet voor aanmelden in seconden</translation>
    </message>
    <message>
        <source>How long a sign-in waits for the browser (30 to 3600 s)</source>
        <translation>Hoe lang een aanmelding op de browser wacht (30 tot 3600 s)</translation>
    </message>
    <message>
        <source>&amp;Sign-in time limit:</source>
        <translation>Tijds&amp;limiet voor aanmelden:</translation>
    </message>
    <message>
        <source>Network</source>
        <translation>Netwerk</translation>
    </message>
    <message>
        <source>The system&apos;s proxy settings</source>
        <translation>De proxyinstellingen van het systeem</translation>
    </message>
    <message>
        <source>No proxy (connect directly)</source>
        <translation>Geen proxy (rechtstreeks verbinden)</translation>
    </message>
    <message>
        <source>This proxy:</source>
        <translation>Deze proxy:</translation>
    </message>
    <message>
        <source>Proxy</source>
        <translation>Proxy</translation>
    </message>
    <message>
        <source>&amp;Proxy:</source>
        <translation>&amp;Proxy:</translation>
    </message>
    <message>
        <source>Proxy address</source>
        <translation>Proxyadres</translation>
    </message>
    <message>
        <source>An http:// or https:// URL, with user:password@ if needed</source>
        <translation>Een http://- of https://-URL, zo nodig met gebruiker:wachtwoord@</translation>
    </message>
    <message>
        <source>Proxy &amp;address:</source>
        <translation>Proxy&amp;adres:</translation>
    </message>
    <message>
        <source>None</source>
        <translation>Geen</translation>
    </message>
    <message>
        <source>Extra CA certificates file</source>
        <translation>Bestand met extra CA-certificaten</translation>
    </message>
    <message>
        <source>A PEM file of certificates to trust besides the system&apos;s, for a proxy that inspects secure connections</source>
        <translation>Een PEM-bestand met certificaten die naast die van het systeem worden vertrouwd, voor een proxy die beveiligde verbindingen inspecteert</translation>
    </message>
    <message>
        <source>&amp;Browse...</source>
        <translation>&amp;Bladeren...</translation>
    </message>
    <message>
        <source>Choose the certificates file</source>
        <translation>Het certificatenbestand kiezen</translation>
    </message>
    <message>
        <source>Extra &amp;certificates:</source>
        <translation>Extra &amp;certificaten:</translation>
    </message>
    <message>
        <source>Proxy and certificate changes apply the next time the app starts.</source>
        <translation>Wijzigingen aan proxy en certificaten gelden vanaf de volgende start van de app.</translation>
    </message>
    <message>
        <source>Set by {where}, which overrides the settings file.</source>
        <translation>Ingesteld door {where}, dat voorrang heeft op het instellingenbestand.</translation>
    </message>
    <message>
        <source>Extra CA certificates</source>
        <translation>Extra CA-certificaten</translation>
    </message>
    <message>
        <source>PEM certificates (*.pem *.crt *.cer);;All files (*)</source>
        <translation>PEM-certificaten (*.pem *.crt *.cer);;Alle bestanden (*)</translation>
    </message>
    <message>
        <source>Not saved: {problem}</source>
        <translation>Niet opgeslagen: {problem}</translation>
    </message>
</context>
<context>
    <name>SelfTestDialog</name>
    <message>
        <source>Waiting</source>
        <translation>Wachten</translation>
    </message>
    <message>
        <source>Running</source>
        <translation>Bezig</translation>
    </message>
    <message>
        <source>Passed</source>
        <translation>Geslaagd</translation>
    </message>
    <message>
        <source>Warning</source>
        <translation>Waarschuwing</translation>
    </message>
    <message>
        <source>Failed</source>
        <translation>Mislukt</translation>
    </message>
    <message>
        <source>Skipped</source>
        <translation>Overgeslagen</translation>
    </message>
    <message>
        <source>Submission</source>
        <translation>Verzending</translation>
    </message>
    <message>
        <source>Delivery</source>
        <translation>Aflevering</translation>
    </message>
    <message>
        <source>Qargo sync</source>
        <translation>Qargo-sync</translation>
    </message>
    <message>
        <source>{seconds} s</source>
        <comment>a duration</comment>
        <translation>{seconds} s</translation>
    </message>
    <message>
        <source>Timeline of the test message</source>
        <translation>Tijdlijn van het testbericht</translation>
    </message>
    <message>
        <source>{leg}: {duration}</source>
        <translation>{leg}: {duration}</translation>
    </message>
    <message>
        <source>did not end</source>
        <translation>niet voltooid</translation>
    </message>
    <message>
        <source>No timings yet</source>
        <translation>Nog geen tijden</translation>
    </message>
    <message>
        <source>Sign in as the mailbox in your browser. If it did not open, copy this link into a private window: {link}</source>
        <translation>Meld u in uw browser aan als de mailbox. Is de browser niet geopend, kopieer deze link dan naar een privévenster: {link}</translation>
    </message>
    <message>
        <source>{step}: {state}</source>
        <translation>{step}: {state}</translation>
    </message>
    <message>
        <source>{verdict}: {summary}</source>
        <translation>{verdict}: {summary}</translation>
    </message>
    <message>
        <source>The test stopped unexpectedly: {problem}</source>
        <translation>De test is onverwacht gestopt: {problem}</translation>
    </message>
    <message>
        <source>Cancelling...</source>
        <translation>Bezig met annuleren...</translation>
    </message>
    <message numerus="yes">
        <source>Running for %n s</source>
        <translation>
            <numerusform>Loopt al %n s</numerusform>
            <numerusform>Loopt al %n s</numerusform>
        </translation>
    </message>
    <message>
        <source>Finished in {duration}</source>
        <translation>Klaar in {duration}</translation>
    </message>
    <message>
        <source>Save self-test report</source>
        <translation>Testrapport opslaan</translation>
    </message>
    <message>
        <source>Text (*.txt);;JSON (*.json)</source>
        <translation>Tekst (*.txt);;JSON (*.json)</translation>
    </message>
    <message>
        <source>Test {address}</source>
        <translation>{address} testen</translation>
    </message>
    <message>
        <source>Send and receive test of {address}</source>
        <translation>Verzend- en ontvangsttest van {address}</translation>
    </message>
    <message>
        <source>Sends one test message from the mailbox to itself, waits for it to arrive and for Qargo&apos;s sync to see it, then deletes it.</source>
        <translation>Verstuurt één testbericht van de mailbox naar zichzelf, wacht tot het aankomt en tot de synchronisatie van Qargo het ziet, en verwijdert het daarna.</translation>
    </message>
    <message>
        <source>Elapsed time</source>
        <translation>Verstreken tijd</translation>
    </message>
    <message>
        <source>Test steps</source>
        <translation>Teststappen</translation>
    </message>
    <message>
        <source>Step</source>
        <translation>Stap</translation>
    </message>
    <message>
        <source>Time</source>
        <translation>Tijd</translation>
    </message>
    <message>
        <source>What happened</source>
        <translation>Wat er gebeurde</translation>
    </message>
    <message>
        <source>Verdict</source>
        <translation>Uitslag</translation>
    </message>
    <message>
        <source>Cancel</source>
        <translation>Annuleren</translation>
    </message>
    <message>
        <source>&amp;Run again</source>
        <translation>&amp;Opnieuw uitvoeren</translation>
    </message>
    <message>
        <source>&amp;Copy report</source>
        <translation>Rapport &amp;kopiëren</translation>
    </message>
    <message>
        <source>&amp;Save report...</source>
        <translation>Rapport op&amp;slaan...</translation>
    </message>
    <message>
        <source>Close</source>
        <translation>Sluiten</translation>
    </message>
</context>
<context>
    <name>SignInPage</name>
    <message>
        <source>&amp;Sign in with Microsoft</source>
        <translation>&amp;Aanmelden bij Microsoft</translation>
    </message>
    <message>
        <source>Opens Microsoft&apos;s sign-in page in your browser</source>
        <translation>Opent de aanmeldpagina van Microsoft in uw browser</translation>
    </message>
    <message>
        <source>Sign in on another &amp;device</source>
        <translation>Aanmelden op een ander a&amp;pparaat</translation>
    </message>
    <message>
        <source>Shows a code to enter on a phone or another computer: for remote sessions where the browser here cannot be used</source>
        <translation>Toont een code om in te voeren op een telefoon of een andere computer: voor sessies op afstand waarin de browser hier niet bruikbaar is</translation>
    </message>
    <message>
        <source>&amp;Try again</source>
        <translation>&amp;Opnieuw proberen</translation>
    </message>
    <message>
        <source>Sign in with &amp;another account</source>
        <translation>Aanmelden met een ander a&amp;ccount</translation>
    </message>
    <message>
        <source>Sign &amp;out</source>
        <translation>A&amp;fmelden</translation>
    </message>
    <message>
        <source>Working</source>
        <translation>Bezig</translation>
    </message>
    <message>
        <source>Sign in to manage your mailboxes</source>
        <translation>Meld u aan om uw mailboxen te beheren</translation>
    </message>
    <message>
        <source>Sign in with your Qargo super admin account. Microsoft&apos;s sign-in page opens in your browser; the app continues when you are done.</source>
        <translation>Meld u aan met uw Qargo-superbeheerdersaccount. De aanmeldpagina van Microsoft wordt geopend in uw browser; de app gaat verder zodra u klaar bent.</translation>
    </message>
    <message>
        <source>Could not sign in</source>
        <translation>Aanmelden is niet gelukt</translation>
    </message>
    <message>
        <source>The app could not check your saved sign-in.</source>
        <translation>De app kon uw opgeslagen aanmelding niet controleren.</translation>
    </message>
    <message>
        <source>This account is not a Qargo super admin</source>
        <translation>Dit account is geen Qargo-superbeheerder</translation>
    </message>
    <message>
        <source>You are signed in as {user}, which is not a super admin of its Qargo organisation. Only super admins can manage linked mailboxes.</source>
        <translation>U bent aangemeld als {user}, en dat is geen superbeheerder van de bijbehorende Qargo-organisatie. Alleen superbeheerders kunnen gekoppelde mailboxen beheren.</translation>
    </message>
    <message>
        <source>Sign in with a super admin account instead, or ask a super admin of your organisation to give this account the role.</source>
        <translation>Meld u in plaats daarvan aan met een superbeheerdersaccount, of vraag een superbeheerder van uw organisatie om dit account die rol te geven.</translation>
    </message>
</context>
<context>
    <name>StartingPage</name>
    <message>
        <source>Starting...</source>
        <translation>Bezig met starten...</translation>
    </message>
    <message>
        <source>Working</source>
        <translation>Bezig</translation>
    </message>
</context>
<context>
    <name>StatusFilterCombo</name>
    <message>
        <source>Status filter</source>
        <translation>Statusfilter</translation>
    </message>
    <message>
        <source>Show only mailboxes in a state</source>
        <translation>Alleen mailboxen met een bepaalde status tonen</translation>
    </message>
    <message>
        <source>All states</source>
        <translation>Alle statussen</translation>
    </message>
    <message>
        <source>Needs attention</source>
        <translation>Vraagt aandacht</translation>
    </message>
    <message>
        <source>{label} ({count})</source>
        <translation>{label} ({count})</translation>
    </message>
    <message>
        <source>{label}: {count}</source>
        <translation>{label}: {count}</translation>
    </message>
</context>
<context>
    <name>action</name>
    <message>
        <source>Authorise API</source>
        <translation>API autoriseren</translation>
    </message>
    <message>
        <source>Reauthorise API</source>
        <translation>API opnieuw autoriseren</translation>
    </message>
    <message>
        <source>Reset API link status</source>
        <translation>API-koppelingsstatus resetten</translation>
    </message>
    <message>
        <source>Test mail flow</source>
        <translation>Mailverkeer testen</translation>
    </message>
    <message>
        <source>Cancel authorisation</source>
        <translation>Autorisatie annuleren</translation>
    </message>
    <message>
        <source>Remove from list</source>
        <translation>Uit lijst verwijderen</translation>
    </message>
    <message>
        <source>&amp;Authorise API</source>
        <translation>API &amp;autoriseren</translation>
    </message>
    <message>
        <source>&amp;Reauthorise API</source>
        <translation>API &amp;opnieuw autoriseren</translation>
    </message>
    <message>
        <source>R&amp;eset API link status</source>
        <translation>API-koppelingsstatus &amp;resetten</translation>
    </message>
    <message>
        <source>&amp;Test mail flow</source>
        <translation>Mailverkeer &amp;testen</translation>
    </message>
    <message>
        <source>Ca&amp;ncel authorisation</source>
        <translation>Autorisatie a&amp;nnuleren</translation>
    </message>
    <message>
        <source>Re&amp;move from list</source>
        <translation>Uit lijst &amp;verwijderen</translation>
    </message>
</context>
<context>
    <name>advice</name>
    <message>
        <source>The person declined to give Qargo access to the mailbox.</source>
        <translation>De gebruiker heeft geweigerd Qargo toegang tot de mailbox te geven.</translation>
    </message>
    <message>
        <source>Try again and choose Accept on the Microsoft consent page.</source>
        <translation>Probeer het opnieuw en kies Accepteren op de toestemmingspagina van Microsoft.</translation>
    </message>
    <message>
        <source>Your organisation requires an administrator to approve Qargo first.</source>
        <translation>Uw organisatie vereist dat een beheerder Qargo eerst goedkeurt.</translation>
    </message>
    <message>
        <source>Ask a Microsoft 365 administrator of the tenant to grant admin consent to the Qargo app, then try again.</source>
        <translation>Vraag een Microsoft 365-beheerder van de tenant om beheerderstoestemming te geven aan de Qargo-app en probeer het daarna opnieuw.</translation>
    </message>
    <message>
        <source>The app registration does not allow this app&apos;s sign-in address (redirect URI).</source>
        <translation>De app-registratie staat het aanmeldadres van deze app (omleidings-URI) niet toe.</translation>
    </message>
    <message>
        <source>The app registration must list http://localhost as a redirect URI for mobile and desktop applications. Contact Qargo Support.</source>
        <translation>De app-registratie moet http://localhost vermelden als omleidings-URI voor mobiele en desktoptoepassingen. Neem contact op met Qargo Support.</translation>
    </message>
    <message>
        <source>The account that signed in does not belong to your organisation&apos;s tenant.</source>
        <translation>Het account waarmee is aangemeld, hoort niet bij de tenant van uw organisatie.</translation>
    </message>
    <message>
        <source>Sign in with an account of your organisation (sign out in the browser, or use a private window).</source>
        <translation>Meld u aan met een account van uw organisatie (meld u af in de browser, of gebruik een privévenster).</translation>
    </message>
    <message>
        <source>Microsoft requires multi-factor authentication for this account.</source>
        <translation>Microsoft vereist meervoudige verificatie voor dit account.</translation>
    </message>
    <message>
        <source>Try again and complete the extra verification in the browser.</source>
        <translation>Probeer het opnieuw en voltooi de extra verificatie in de browser.</translation>
    </message>
    <message>
        <source>Microsoft requires this account to register for multi-factor authentication.</source>
        <translation>Microsoft vereist dat dit account zich registreert voor meervoudige verificatie.</translation>
    </message>
    <message>
        <source>Try again and complete the registration in the browser.</source>
        <translation>Probeer het opnieuw en voltooi de registratie in de browser.</translation>
    </message>
    <message>
        <source>A conditional access policy of your organisation blocked the sign-in.</source>
        <translation>Een beleid voor voorwaardelijke toegang van uw organisatie heeft de aanmelding geblokkeerd.</translation>
    </message>
    <message>
        <source>Ask your Microsoft 365 administrator which policy applies to this device or location.</source>
        <translation>Vraag uw Microsoft 365-beheerder welk beleid geldt voor dit apparaat of deze locatie.</translation>
    </message>
    <message>
        <source>The mailbox&apos;s grant was revoked (often after a password change).</source>
        <translation>De machtiging van de mailbox is ingetrokken (vaak na een wachtwoordwijziging).</translation>
    </message>
    <message>
        <source>Reauthorise the mailbox.</source>
        <translation>Autoriseer de mailbox opnieuw.</translation>
    </message>
    <message>
        <source>The sign-in expired after a long time without use.</source>
        <translation>De aanmelding is verlopen na lange tijd zonder gebruik.</translation>
    </message>
    <message>
        <source>Sign in again.</source>
        <translation>Meld u opnieuw aan.</translation>
    </message>
    <message>
        <source>The sign-in expired.</source>
        <translation>De aanmelding is verlopen.</translation>
    </message>
    <message>
        <source>The sign-in code was already used.</source>
        <translation>De aanmeldcode is al gebruikt.</translation>
    </message>
    <message>
        <source>Start the sign-in again.</source>
        <translation>Begin opnieuw met aanmelden.</translation>
    </message>
    <message>
        <source>The sign-in could not be verified (PKCE check failed).</source>
        <translation>De aanmelding kon niet worden geverifieerd (PKCE-controle mislukt).</translation>
    </message>
    <message>
        <source>Start the sign-in again. If it happens again, contact Qargo Support.</source>
        <translation>Begin opnieuw met aanmelden. Gebeurt het weer, neem dan contact op met Qargo Support.</translation>
    </message>
    <message>
        <source>The app registration does not allow sign-in on another device.</source>
        <translation>De app-registratie staat aanmelden op een ander apparaat niet toe.</translation>
    </message>
    <message>
        <source>A Microsoft 365 administrator must turn on &apos;Allow public client flows&apos; in the Qargo app registration, or sign in with the browser on this computer instead.</source>
        <translation>Een Microsoft 365-beheerder moet &apos;Openbare clientstromen toestaan&apos; inschakelen in de app-registratie van Qargo, of meld u in plaats daarvan aan met de browser op deze computer.</translation>
    </message>
    <message>
        <source>The Qargo app is not known in this tenant.</source>
        <translation>De Qargo-app is onbekend in deze tenant.</translation>
    </message>
    <message>
        <source>Check the client id and authority in the settings, or contact Qargo Support.</source>
        <translation>Controleer de client-id en de authority in de instellingen, of neem contact op met Qargo Support.</translation>
    </message>
    <message>
        <source>Microsoft sign-in had a temporary problem.</source>
        <translation>Aanmelden bij Microsoft had een tijdelijk probleem.</translation>
    </message>
    <message>
        <source>Try again in a minute.</source>
        <translation>Probeer het over een minuut opnieuw.</translation>
    </message>
    <message>
        <source>Access was not granted in the browser.</source>
        <translation>In de browser is geen toegang verleend.</translation>
    </message>
    <message>
        <source>Microsoft needs you to sign in again in the browser.</source>
        <translation>Microsoft vraagt u zich opnieuw aan te melden in de browser.</translation>
    </message>
    <message>
        <source>Consent is needed before Qargo can use this account.</source>
        <translation>Er is toestemming nodig voordat Qargo dit account kan gebruiken.</translation>
    </message>
    <message>
        <source>Try again and accept the consent page.</source>
        <translation>Probeer het opnieuw en accepteer de toestemmingspagina.</translation>
    </message>
    <message>
        <source>The saved sign-in is no longer valid.</source>
        <translation>De opgeslagen aanmelding is niet meer geldig.</translation>
    </message>
    <message>
        <source>Microsoft sign-in sent an answer the app could not use.</source>
        <translation>Aanmelden bij Microsoft gaf een antwoord dat de app niet kon gebruiken.</translation>
    </message>
    <message>
        <source>Try again. If it keeps happening, sign out and sign in again; if that fails too, contact Qargo Support.</source>
        <translation>Probeer het opnieuw. Blijft het gebeuren, meld u dan af en opnieuw aan; lukt ook dat niet, neem dan contact op met Qargo Support.</translation>
    </message>
    <message>
        <source>Microsoft sign-in is busy or temporarily unavailable.</source>
        <translation>Aanmelden bij Microsoft is druk of tijdelijk niet beschikbaar.</translation>
    </message>
    <message>
        <source>Waiting for the sign-in to be completed on the other device.</source>
        <translation>Wachten tot het aanmelden op het andere apparaat is voltooid.</translation>
    </message>
    <message>
        <source>The sign-in code expired before it was used.</source>
        <translation>De aanmeldcode is verlopen voordat die werd gebruikt.</translation>
    </message>
    <message>
        <source>Start the sign-in again and enter the code sooner.</source>
        <translation>Begin opnieuw met aanmelden en voer de code sneller in.</translation>
    </message>
    <message>
        <source>The sign-in was declined on the other device.</source>
        <translation>Het aanmelden is geweigerd op het andere apparaat.</translation>
    </message>
    <message>
        <source>Start the sign-in again and choose Accept on the other device.</source>
        <translation>Begin opnieuw met aanmelden en kies Accepteren op het andere apparaat.</translation>
    </message>
    <message>
        <source>The sign-in code was not recognised.</source>
        <translation>De aanmeldcode is niet herkend.</translation>
    </message>
    <message>
        <source>Start the sign-in again and enter the new code exactly as shown.</source>
        <translation>Begin opnieuw met aanmelden en voer de nieuwe code precies zo in als getoond.</translation>
    </message>
    <message>
        <source>This account is not a Qargo super admin.</source>
        <translation>Dit account is geen Qargo-superbeheerder.</translation>
    </message>
    <message>
        <source>Sign out and sign in with a super admin account of your organisation.</source>
        <translation>Meld u af en meld u aan met een superbeheerdersaccount van uw organisatie.</translation>
    </message>
    <message>
        <source>Qargo did not accept the sign-in.</source>
        <translation>Qargo heeft de aanmelding niet geaccepteerd.</translation>
    </message>
    <message>
        <source>The sign-in has expired.</source>
        <translation>De aanmelding is verlopen.</translation>
    </message>
    <message>
        <source>The browser signed in a different account than the mailbox.</source>
        <translation>De browser heeft een ander account aangemeld dan de mailbox.</translation>
    </message>
    <message>
        <source>Sign out of the other account in the browser, or use a private window, and try again.</source>
        <translation>Meld het andere account af in de browser, of gebruik een privévenster, en probeer het opnieuw.</translation>
    </message>
    <message>
        <source>Not every permission Qargo needs was granted for the mailbox.</source>
        <translation>Niet alle machtigingen die Qargo nodig heeft, zijn voor de mailbox verleend.</translation>
    </message>
    <message>
        <source>Reauthorise and accept every permission on the consent page.</source>
        <translation>Autoriseer opnieuw en accepteer alle machtigingen op de toestemmingspagina.</translation>
    </message>
    <message>
        <source>The authorisation took too long and expired.</source>
        <translation>De autorisatie duurde te lang en is verlopen.</translation>
    </message>
    <message>
        <source>Start the authorisation again and finish it in the browser within the time shown.</source>
        <translation>Begin opnieuw met autoriseren en rond het in de browser af binnen de getoonde tijd.</translation>
    </message>
    <message>
        <source>Another authorisation of this mailbox is already running.</source>
        <translation>Er loopt al een andere autorisatie van deze mailbox.</translation>
    </message>
    <message>
        <source>Wait for it to finish or expire, then try again.</source>
        <translation>Wacht tot die klaar of verlopen is en probeer het dan opnieuw.</translation>
    </message>
    <message>
        <source>This authorisation has already finished.</source>
        <translation>Deze autorisatie is al afgerond.</translation>
    </message>
    <message>
        <source>This mailbox cannot be authorised in its current state.</source>
        <translation>Deze mailbox kan in de huidige status niet worden geautoriseerd.</translation>
    </message>
    <message>
        <source>Reset the API link status first, then authorise.</source>
        <translation>Reset eerst de API-koppelingsstatus en autoriseer daarna.</translation>
    </message>
    <message>
        <source>Only a mailbox whose link failed can be reset.</source>
        <translation>Alleen een mailbox waarvan de koppeling is mislukt, kan worden gereset.</translation>
    </message>
    <message>
        <source>Refresh the list to see its current state.</source>
        <translation>Vernieuw de lijst om de huidige status te zien.</translation>
    </message>
    <message>
        <source>Someone else changed this mailbox first.</source>
        <translation>Iemand anders heeft deze mailbox eerder gewijzigd.</translation>
    </message>
    <message>
        <source>The row has been refreshed: check its state and try again if still needed.</source>
        <translation>De rij is vernieuwd: controleer de status en probeer het zo nodig opnieuw.</translation>
    </message>
    <message>
        <source>The change was refused because the app did not say which version it changed.</source>
        <translation>De wijziging is geweigerd omdat de app niet aangaf welke versie werd gewijzigd.</translation>
    </message>
    <message>
        <source>This mailbox is already in the list.</source>
        <translation>Deze mailbox staat al in de lijst.</translation>
    </message>
    <message>
        <source>That is not a valid email address.</source>
        <translation>Dat is geen geldig e-mailadres.</translation>
    </message>
    <message>
        <source>This mailbox no longer exists in Qargo.</source>
        <translation>Deze mailbox bestaat niet meer in Qargo.</translation>
    </message>
    <message>
        <source>This mailbox cannot be used through the Microsoft Graph API (for example a shared mailbox without a licence, or an on-premises mailbox).</source>
        <translation>Deze mailbox kan niet via de Microsoft Graph-API worden gebruikt (bijvoorbeeld een gedeelde mailbox zonder licentie, of een on-premises mailbox).</translation>
    </message>
    <message>
        <source>Ask your Microsoft 365 administrator to check the mailbox&apos;s licence and type.</source>
        <translation>Vraag uw Microsoft 365-beheerder om de licentie en het type van de mailbox te controleren.</translation>
    </message>
    <message>
        <source>Qargo is busy and asked the app to slow down.</source>
        <translation>Qargo heeft het druk en vroeg de app het rustiger aan te doen.</translation>
    </message>
    <message>
        <source>Microsoft Graph did not accept the mailbox&apos;s sign-in.</source>
        <translation>Microsoft Graph heeft de aanmelding van de mailbox niet geaccepteerd.</translation>
    </message>
    <message>
        <source>Microsoft Graph refused access to the mailbox.</source>
        <translation>Microsoft Graph heeft de toegang tot de mailbox geweigerd.</translation>
    </message>
    <message>
        <source>Reauthorise and accept every permission.</source>
        <translation>Autoriseer opnieuw en accepteer alle machtigingen.</translation>
    </message>
    <message>
        <source>This mailbox cannot be used through the Microsoft Graph API.</source>
        <translation>Deze mailbox kan niet via de Microsoft Graph-API worden gebruikt.</translation>
    </message>
    <message>
        <source>The message is no longer there.</source>
        <translation>Het bericht is er niet meer.</translation>
    </message>
    <message>
        <source>Microsoft Graph is throttling requests for this mailbox.</source>
        <translation>Microsoft Graph beperkt de aanvragen voor deze mailbox.</translation>
    </message>
    <message>
        <source>Microsoft Graph is throttling requests for this app.</source>
        <translation>Microsoft Graph beperkt de aanvragen voor deze app.</translation>
    </message>
    <message>
        <source>Microsoft Graph is temporarily unavailable.</source>
        <translation>Microsoft Graph is tijdelijk niet beschikbaar.</translation>
    </message>
    <message>
        <source>Microsoft Graph had an internal error.</source>
        <translation>Microsoft Graph had een interne fout.</translation>
    </message>
    <message>
        <source>Try again in a few minutes.</source>
        <translation>Probeer het over een paar minuten opnieuw.</translation>
    </message>
    <message>
        <source>Microsoft 365 refused to send as this mailbox.</source>
        <translation>Microsoft 365 weigerde te verzenden als deze mailbox.</translation>
    </message>
    <message>
        <source>Reauthorise the mailbox, signing in as the mailbox account itself.</source>
        <translation>Autoriseer de mailbox opnieuw en meld u daarbij aan met het account van de mailbox zelf.</translation>
    </message>
    <message>
        <source>Microsoft 365 did not accept the mailbox&apos;s own address as a recipient.</source>
        <translation>Microsoft 365 accepteerde het eigen adres van de mailbox niet als ontvanger.</translation>
    </message>
    <message>
        <source>Ask your Microsoft 365 administrator to check that the address is the mailbox&apos;s primary address.</source>
        <translation>Vraag uw Microsoft 365-beheerder te controleren of het adres het primaire adres van de mailbox is.</translation>
    </message>
    <message>
        <source>Microsoft 365 has blocked this mailbox from sending mail.</source>
        <translation>Microsoft 365 heeft deze mailbox geblokkeerd voor het verzenden van mail.</translation>
    </message>
    <message>
        <source>This often follows suspected spam. A Microsoft 365 administrator can release it under Restricted entities in the Microsoft Defender portal.</source>
        <translation>Dit volgt vaak op vermoedelijke spam. Een Microsoft 365-beheerder kan de blokkade opheffen onder Beperkte entiteiten in de Microsoft Defender-portal.</translation>
    </message>
    <message>
        <source>The mailbox is full.</source>
        <translation>De mailbox is vol.</translation>
    </message>
    <message>
        <source>Free some space in the mailbox, or ask your Microsoft 365 administrator to raise its quota.</source>
        <translation>Maak ruimte vrij in de mailbox, of vraag uw Microsoft 365-beheerder het quotum te verhogen.</translation>
    </message>
    <message>
        <source>The send request got no answer, so the app could not tell whether the test message went out.</source>
        <translation>Het verzendverzoek kreeg geen antwoord, dus de app kon niet zien of het testbericht is verstuurd.</translation>
    </message>
    <message>
        <source>The app looked for the message instead of sending it again. Check the network and proxy, then run the test again.</source>
        <translation>De app heeft naar het bericht gezocht in plaats van het opnieuw te versturen. Controleer het netwerk en de proxy en voer de test daarna opnieuw uit.</translation>
    </message>
    <message>
        <source>Microsoft Graph took a long time to accept the test message.</source>
        <translation>Microsoft Graph deed er lang over om het testbericht te accepteren.</translation>
    </message>
    <message>
        <source>A slow network or proxy between this computer and Microsoft 365 can cause this. Run the test again; if it stays slow, check the proxy.</source>
        <translation>Een traag netwerk of een trage proxy tussen deze computer en Microsoft 365 kan dit veroorzaken. Voer de test opnieuw uit; blijft het traag, controleer dan de proxy.</translation>
    </message>
    <message>
        <source>The test message did not arrive in the mailbox in time.</source>
        <translation>Het testbericht is niet op tijd in de mailbox aangekomen.</translation>
    </message>
    <message>
        <source>Check the tenant&apos;s mail flow in the Exchange admin centre (message trace, quarantine, transport rules) and the mailbox&apos;s inbox rules. If mail flow looks fine, contact Qargo Support with this report.</source>
        <translation>Controleer de mailstroom van de tenant in het Exchange-beheercentrum (berichttracering, quarantaine, transportregels) en de Postvak IN-regels van de mailbox. Ziet de mailstroom er goed uit, neem dan met dit rapport contact op met Qargo Support.</translation>
    </message>
    <message>
        <source>Microsoft 365 delivered the test message, but slowly.</source>
        <translation>Microsoft 365 heeft het testbericht afgeleverd, maar traag.</translation>
    </message>
    <message>
        <source>The delay is in Microsoft 365&apos;s delivery, not in Qargo. If it keeps happening, check the tenant&apos;s mail flow with a message trace in the Exchange admin centre.</source>
        <translation>De vertraging zit in de aflevering door Microsoft 365, niet in Qargo. Blijft het gebeuren, controleer dan de mailstroom van de tenant met een berichttracering in het Exchange-beheercentrum.</translation>
    </message>
    <message>
        <source>Qargo&apos;s sync did not see the test message in time.</source>
        <translation>De synchronisatie van Qargo heeft het testbericht niet op tijd gezien.</translation>
    </message>
    <message>
        <source>Reauthorise the mailbox and run the test again. If it still fails, reset the link, authorise it again, and contact Qargo Support with this report.</source>
        <translation>Autoriseer de mailbox opnieuw en voer de test nog eens uit. Mislukt die nog steeds, reset dan de koppeling, autoriseer opnieuw en neem met dit rapport contact op met Qargo Support.</translation>
    </message>
    <message>
        <source>Qargo&apos;s sync saw the test message, but slowly.</source>
        <translation>De synchronisatie van Qargo heeft het testbericht gezien, maar traag.</translation>
    </message>
    <message>
        <source>The delay is on Qargo&apos;s side. If it keeps happening, contact Qargo Support with this report.</source>
        <translation>De vertraging ligt bij Qargo. Blijft het gebeuren, neem dan met dit rapport contact op met Qargo Support.</translation>
    </message>
    <message>
        <source>Qargo does not read this mailbox: it is not linked.</source>
        <translation>Qargo leest deze mailbox niet: hij is niet gekoppeld.</translation>
    </message>
    <message>
        <source>Authorise the mailbox, then run the test again.</source>
        <translation>Autoriseer de mailbox en voer de test daarna opnieuw uit.</translation>
    </message>
    <message>
        <source>Qargo cannot read this mailbox until it is reauthorised.</source>
        <translation>Qargo kan deze mailbox pas lezen als hij opnieuw is geautoriseerd.</translation>
    </message>
    <message>
        <source>Reauthorise the mailbox, then run the test again.</source>
        <translation>Autoriseer de mailbox opnieuw en voer de test daarna opnieuw uit.</translation>
    </message>
    <message>
        <source>Qargo cannot read this mailbox: its last authorisation failed.</source>
        <translation>Qargo kan deze mailbox niet lezen: de laatste autorisatie is mislukt.</translation>
    </message>
    <message>
        <source>Reset the API link status, authorise the mailbox again, then run the test again.</source>
        <translation>Reset de API-koppelingsstatus, autoriseer de mailbox opnieuw en voer daarna de test opnieuw uit.</translation>
    </message>
    <message>
        <source>Microsoft refused the mailbox&apos;s saved sign-in (the grant was revoked or has expired).</source>
        <translation>Microsoft weigerde de opgeslagen aanmelding van de mailbox (de machtiging is ingetrokken of verlopen).</translation>
    </message>
    <message>
        <source>This computer has no saved sign-in for the mailbox.</source>
        <translation>Deze computer heeft geen opgeslagen aanmelding voor de mailbox.</translation>
    </message>
    <message>
        <source>Run the test again and sign in as the mailbox in the browser when asked.</source>
        <translation>Voer de test opnieuw uit en meld u in de browser aan als de mailbox wanneer daarom wordt gevraagd.</translation>
    </message>
    <message>
        <source>This computer&apos;s clock is far from the servers&apos; clocks.</source>
        <translation>De klok van deze computer wijkt sterk af van die van de servers.</translation>
    </message>
    <message>
        <source>Set the clock to synchronise automatically. Sign-ins can fail when the clock is more than five minutes off.</source>
        <translation>Stel de klok in op automatisch synchroniseren. Aanmelden kan mislukken als de klok meer dan vijf minuten afwijkt.</translation>
    </message>
    <message>
        <source>The test message could not be deleted.</source>
        <translation>Het testbericht kon niet worden verwijderd.</translation>
    </message>
    <message>
        <source>Delete it by hand: its subject starts with [Qargo self-test].</source>
        <translation>Verwijder het met de hand: het onderwerp begint met [Qargo self-test].</translation>
    </message>
    <message>
        <source>The test ran out of time.</source>
        <translation>De test had niet genoeg tijd.</translation>
    </message>
    <message>
        <source>Run it again, with a longer time limit if the services are slow today.</source>
        <translation>Voer hem opnieuw uit, met een ruimere tijdslimiet als de diensten vandaag traag zijn.</translation>
    </message>
    <message>
        <source>The service is busy and asked the app to slow down.</source>
        <translation>De dienst heeft het druk en vroeg de app het rustiger aan te doen.</translation>
    </message>
    <message>
        <source>The service is temporarily unavailable.</source>
        <translation>De dienst is tijdelijk niet beschikbaar.</translation>
    </message>
    <message>
        <source>The app could not reach the service.</source>
        <translation>De app kon de dienst niet bereiken.</translation>
    </message>
    <message>
        <source>Check the network connection and proxy settings, then retry.</source>
        <translation>Controleer de netwerkverbinding en de proxyinstellingen en probeer het opnieuw.</translation>
    </message>
    <message>
        <source>The service&apos;s name could not be found (DNS).</source>
        <translation>De naam van de dienst kon niet worden gevonden (DNS).</translation>
    </message>
    <message>
        <source>Check the network connection and the configured addresses. On a network that only reaches the internet through a proxy, set the proxy in the settings.</source>
        <translation>Controleer de netwerkverbinding en de ingestelde adressen. Op een netwerk dat alleen via een proxy internet bereikt, stelt u de proxy in bij de instellingen.</translation>
    </message>
    <message>
        <source>The service did not answer in time.</source>
        <translation>De dienst antwoordde niet op tijd.</translation>
    </message>
    <message>
        <source>A slow network, a VPN, or a firewall that silently drops the connection can cause this. Check the network connection, then retry.</source>
        <translation>Een traag netwerk, een vpn of een firewall die de verbinding stilletjes verbreekt, kan dit veroorzaken. Controleer de netwerkverbinding en probeer het opnieuw.</translation>
    </message>
    <message>
        <source>The service&apos;s certificate was issued by an authority this computer does not trust.</source>
        <translation>Het certificaat van de dienst is uitgegeven door een instantie die deze computer niet vertrouwt.</translation>
    </message>
    <message>
        <source>Usually a TLS-inspecting proxy (a corporate firewall or antivirus that opens secure connections) is in the way. Ask IT to install the proxy&apos;s root certificate in the computer&apos;s trusted roots, or save it as a PEM file and set extra_ca_file in the settings. Diagnostics names who issued the certificate.</source>
        <translation>Meestal zit er een proxy tussen die TLS inspecteert (een bedrijfsfirewall of antivirus die beveiligde verbindingen openbreekt). Vraag IT het basiscertificaat van de proxy te installeren bij de vertrouwde basiscertificaten van de computer, of sla het op als PEM-bestand en stel extra_ca_file in bij de instellingen. Diagnose toont wie het certificaat heeft uitgegeven.</translation>
    </message>
    <message>
        <source>The service&apos;s certificate has expired or is not valid yet.</source>
        <translation>Het certificaat van de dienst is verlopen of nog niet geldig.</translation>
    </message>
    <message>
        <source>Check that this computer&apos;s date and time are right (Diagnostics shows how far the clock is from the servers&apos;). If they are, a proxy may be presenting an old certificate: tell IT.</source>
        <translation>Controleer of de datum en tijd van deze computer kloppen (Diagnose toont hoever de klok afwijkt van die van de servers). Kloppen ze, dan biedt een proxy misschien een oud certificaat aan: meld het aan IT.</translation>
    </message>
    <message>
        <source>The certificate that answered belongs to a different address.</source>
        <translation>Het certificaat dat antwoordde, hoort bij een ander adres.</translation>
    </message>
    <message>
        <source>A proxy or a network sign-in page (hotel or guest Wi-Fi) may be answering instead of the service. Sign in to the network in a browser, or ask IT.</source>
        <translation>Misschien antwoordt een proxy of een aanmeldpagina van het netwerk (hotel- of gastwifi) in plaats van de dienst. Meld u in een browser aan bij het netwerk, of vraag het aan IT.</translation>
    </message>
    <message>
        <source>The secure connection (TLS) to the service failed.</source>
        <translation>De beveiligde verbinding (TLS) met de dienst is mislukt.</translation>
    </message>
    <message>
        <source>A proxy or firewall may be blocking or altering the connection. Run Diagnostics and send the support bundle to your support contact.</source>
        <translation>Een proxy of firewall blokkeert of wijzigt misschien de verbinding. Voer Diagnose uit en stuur het ondersteuningspakket naar uw contactpersoon voor ondersteuning.</translation>
    </message>
    <message>
        <source>The proxy asked for a user name and password.</source>
        <translation>De proxy vroeg om een gebruikersnaam en wachtwoord.</translation>
    </message>
    <message>
        <source>Put them in the proxy setting (proxy = &quot;http://user:password@proxy.example:8080&quot;), or ask IT to let the app through. Proxies that sign in with the Windows account (NTLM or Kerberos) are not supported: ask IT for an exception for the Microsoft and Qargo addresses.</source>
        <translation>Zet ze in de proxyinstelling (proxy = &quot;http://gebruiker:wachtwoord@proxy.example:8080&quot;), of vraag IT de app door te laten. Proxy&apos;s die aanmelden met het Windows-account (NTLM of Kerberos) worden niet ondersteund: vraag IT om een uitzondering voor de adressen van Microsoft en Qargo.</translation>
    </message>
    <message>
        <source>The proxy refused to connect the app to the service.</source>
        <translation>De proxy weigerde de app met de dienst te verbinden.</translation>
    </message>
    <message>
        <source>The proxy may block this address or could not reach it. Ask IT to allow the Microsoft sign-in, Microsoft Graph and Qargo addresses (Diagnostics lists them).</source>
        <translation>De proxy blokkeert dit adres misschien of kon het niet bereiken. Vraag IT de adressen voor aanmelden bij Microsoft, Microsoft Graph en Qargo toe te staan (Diagnose somt ze op).</translation>
    </message>
    <message>
        <source>The proxy could not be reached.</source>
        <translation>De proxy kon niet worden bereikt.</translation>
    </message>
    <message>
        <source>Check the proxy in the settings (or the system&apos;s proxy settings) and the network connection.</source>
        <translation>Controleer de proxy in de instellingen (of de proxyinstellingen van het systeem) en de netwerkverbinding.</translation>
    </message>
    <message>
        <source>The service sent an answer the app could not understand.</source>
        <translation>De dienst stuurde een antwoord dat de app niet begreep.</translation>
    </message>
    <message>
        <source>A proxy may have replaced the answer. Retry; if it persists, contact Qargo Support.</source>
        <translation>Misschien heeft een proxy het antwoord vervangen. Probeer het opnieuw; blijft het, neem dan contact op met Qargo Support.</translation>
    </message>
    <message>
        <source>Cancelled.</source>
        <translation>Geannuleerd.</translation>
    </message>
    <message>
        <source>The sign-in was not completed in time.</source>
        <translation>Het aanmelden is niet op tijd voltooid.</translation>
    </message>
    <message>
        <source>Try again and finish the sign-in in the browser within the time shown.</source>
        <translation>Probeer het opnieuw en rond het aanmelden in de browser af binnen de getoonde tijd.</translation>
    </message>
    <message>
        <source>You need to sign in.</source>
        <translation>U moet zich aanmelden.</translation>
    </message>
    <message>
        <source>No browser could be opened on this computer.</source>
        <translation>Er kon op deze computer geen browser worden geopend.</translation>
    </message>
    <message>
        <source>Copy the sign-in link and open it in a browser, or use sign-in on another device.</source>
        <translation>Kopieer de aanmeldlink en open die in een browser, of meld u aan op een ander apparaat.</translation>
    </message>
    <message>
        <source>Another sign-in is already waiting in the browser.</source>
        <translation>Er wacht al een andere aanmelding in de browser.</translation>
    </message>
    <message>
        <source>Finish or cancel it first.</source>
        <translation>Rond die eerst af of annuleer die.</translation>
    </message>
    <message>
        <source>Something went wrong that the app does not recognise.</source>
        <translation>Er ging iets mis dat de app niet herkent.</translation>
    </message>
    <message>
        <source>Contact Qargo Support with the error code and correlation id shown.</source>
        <translation>Neem contact op met Qargo Support en vermeld de getoonde foutcode en correlatie-id.</translation>
    </message>
</context>
<context>
    <name>app</name>
    <message>
        <source>Sandbox: sign in as {account} (a super admin). The sandbox&apos;s sign-in page lets you pick the account; no password is needed.</source>
        <translation>Sandbox: meld u aan als {account} (een superbeheerder). Op de aanmeldpagina van de sandbox kiest u het account; een wachtwoord is niet nodig.</translation>
    </message>
    <message>
        <source>Connecting...</source>
        <translation>Verbinding maken...</translation>
    </message>
    <message>
        <source>Starting the built-in sandbox...</source>
        <translation>De ingebouwde sandbox starten...</translation>
    </message>
    <message>
        <source>The app could not start: {problem}</source>
        <translation>De app kon niet starten: {problem}</translation>
    </message>
    <message>
        <source>{problem} You will need to sign in again next time.</source>
        <translation>{problem} U moet zich de volgende keer opnieuw aanmelden.</translation>
    </message>
</context>
<context>
    <name>audit</name>
    <message>
        <source>Mailbox added</source>
        <translation>Mailbox toegevoegd</translation>
    </message>
    <message>
        <source>Authorisation started</source>
        <translation>Autorisatie gestart</translation>
    </message>
    <message>
        <source>Mailbox linked</source>
        <translation>Mailbox gekoppeld</translation>
    </message>
    <message>
        <source>Authorisation failed</source>
        <translation>Autorisatie mislukt</translation>
    </message>
    <message>
        <source>Authorisation expired</source>
        <translation>Autorisatie verlopen</translation>
    </message>
    <message>
        <source>Authorisation cancelled</source>
        <translation>Autorisatie geannuleerd</translation>
    </message>
    <message>
        <source>Link reset</source>
        <translation>Koppeling gereset</translation>
    </message>
    <message>
        <source>Grant revoked</source>
        <translation>Machtiging ingetrokken</translation>
    </message>
    <message>
        <source>Mailbox changed</source>
        <translation>Mailbox gewijzigd</translation>
    </message>
    <message>
        <source>Mailbox removed</source>
        <translation>Mailbox verwijderd</translation>
    </message>
    <message>
        <source>Event</source>
        <translation>Gebeurtenis</translation>
    </message>
    <message>
        <source>Unknown time</source>
        <translation>Onbekend tijdstip</translation>
    </message>
    <message>
        <source>app {version} on {machine}</source>
        <translation>app {version} op {machine}</translation>
    </message>
    <message>
        <source>app {version}</source>
        <translation>app {version}</translation>
    </message>
    <message>
        <source>unknown</source>
        <translation>onbekend</translation>
    </message>
    <message>
        <source>What: {what} ({code})</source>
        <translation>Wat: {what} ({code})</translation>
    </message>
    <message>
        <source>Details: {detail}</source>
        <translation>Details: {detail}</translation>
    </message>
    <message>
        <source>When: {when}</source>
        <translation>Wanneer: {when}</translation>
    </message>
    <message>
        <source>Who: {actor}</source>
        <translation>Wie: {actor}</translation>
    </message>
    <message>
        <source>App version: {version}</source>
        <translation>App-versie: {version}</translation>
    </message>
    <message>
        <source>Machine: {machine}</source>
        <translation>Computer: {machine}</translation>
    </message>
</context>
<context>
    <name>dialogs</name>
    <message>
        <source>Reset API link status</source>
        <translation>API-koppelingsstatus resetten</translation>
    </message>
    <message>
        <source>Reset the API link status of {address}?</source>
        <translation>De API-koppelingsstatus van {address} resetten?</translation>
    </message>
    <message>
        <source>The mailbox becomes Unlinked. Qargo keeps not reading or sending its mail until someone authorises it again.</source>
        <translation>De mailbox wordt Niet gekoppeld. Qargo leest en verstuurt de mail ervan pas weer als iemand hem opnieuw autoriseert.</translation>
    </message>
    <message>
        <source>Remove mailbox</source>
        <translation>Mailbox verwijderen</translation>
    </message>
    <message>
        <source>Remove {address} from Qargo?</source>
        <translation>{address} uit Qargo verwijderen?</translation>
    </message>
    <message>
        <source>Qargo stops reading and sending this mailbox&apos;s mail and forgets its link. You can add it again later, but it will need to be authorised again.</source>
        <translation>Qargo stopt met het lezen en versturen van de mail van deze mailbox en vergeet de koppeling. U kunt hem later opnieuw toevoegen, maar dan moet hij opnieuw worden geautoriseerd.</translation>
    </message>
    <message>
        <source>Add mailbox</source>
        <translation>Mailbox toevoegen</translation>
    </message>
    <message>
        <source>Add a Microsoft 365 mailbox that Qargo should read and send mail for. After adding it, authorise it by signing in as the mailbox.</source>
        <translation>Voeg een Microsoft 365-mailbox toe waarvan Qargo mail moet lezen en versturen. Autoriseer hem daarna door u aan te melden als de mailbox.</translation>
    </message>
    <message>
        <source>Email address</source>
        <translation>E-mailadres</translation>
    </message>
    <message>
        <source>The mailbox&apos;s Microsoft 365 address</source>
        <translation>Het Microsoft 365-adres van de mailbox</translation>
    </message>
    <message>
        <source>Optional</source>
        <translation>Optioneel</translation>
    </message>
    <message>
        <source>Display name</source>
        <translation>Weergavenaam</translation>
    </message>
    <message>
        <source>The name shown for the mailbox in the list (optional)</source>
        <translation>De naam die voor de mailbox in de lijst wordt getoond (optioneel)</translation>
    </message>
    <message>
        <source>&amp;Email address:</source>
        <translation>&amp;E-mailadres:</translation>
    </message>
    <message>
        <source>&amp;Display name:</source>
        <translation>&amp;Weergavenaam:</translation>
    </message>
    <message>
        <source>Sign in with Microsoft</source>
        <translation>Aanmelden bij Microsoft</translation>
    </message>
    <message>
        <source>Finish signing in in your browser</source>
        <translation>Rond het aanmelden af in uw browser</translation>
    </message>
    <message>
        <source>A Microsoft sign-in page is opening in your browser. Sign in with your Qargo super admin account and accept. Qargo Desktop continues by itself when you are done.</source>
        <translation>Er wordt een aanmeldpagina van Microsoft geopend in uw browser. Meld u aan met uw Qargo-superbeheerdersaccount en accepteer. Qargo Desktop gaat vanzelf verder zodra u klaar bent.</translation>
    </message>
    <message>
        <source>Time left</source>
        <translation>Resterende tijd</translation>
    </message>
    <message>
        <source>If the page did not open, copy this link into a browser on this computer:</source>
        <translation>Is de pagina niet geopend? Kopieer deze link dan naar een browser op deze computer:</translation>
    </message>
    <message>
        <source>Sign-in link</source>
        <translation>Aanmeldlink</translation>
    </message>
    <message>
        <source>&amp;Copy link</source>
        <translation>Link &amp;kopiëren</translation>
    </message>
    <message>
        <source>Copy the sign-in link</source>
        <translation>De aanmeldlink kopiëren</translation>
    </message>
    <message>
        <source>Stop waiting for the browser (Esc)</source>
        <translation>Stoppen met wachten op de browser (Esc)</translation>
    </message>
    <message>
        <source>No browser could be opened</source>
        <translation>Er kon geen browser worden geopend</translation>
    </message>
    <message>
        <source>Copy the sign-in link below and open it in a browser on this computer. Sign in there; Qargo Desktop continues by itself when you are done.</source>
        <translation>Kopieer de aanmeldlink hieronder en open die in een browser op deze computer. Meld u daar aan; Qargo Desktop gaat vanzelf verder zodra u klaar bent.</translation>
    </message>
    <message>
        <source>Sign-in link:</source>
        <translation>Aanmeldlink:</translation>
    </message>
    <message>
        <source>Time left: {minutes}:{seconds}</source>
        <translation>Resterende tijd: {minutes}:{seconds}</translation>
    </message>
    <message>
        <source>Copied</source>
        <translation>Gekopieerd</translation>
    </message>
    <message>
        <source>Cancelling...</source>
        <translation>Bezig met annuleren...</translation>
    </message>
    <message>
        <source>Cancelling the sign-in...</source>
        <translation>Het aanmelden wordt geannuleerd...</translation>
    </message>
    <message>
        <source>{app}: unexpected problem</source>
        <translation>{app}: onverwacht probleem</translation>
    </message>
    <message>
        <source>{app} met a problem it did not expect.</source>
        <translation>{app} is op een onverwacht probleem gestuit.</translation>
    </message>
    <message>
        <source>What happened: {summary}</source>
        <translation>Wat er gebeurde: {summary}</translation>
    </message>
    <message>
        <source>The details were written to the log. If this keeps happening, copy the report below and send it to Qargo Support. You can keep working, but if the window behaves oddly, quit and start the app again.</source>
        <translation>De details zijn in het logbestand vastgelegd. Blijft dit gebeuren, kopieer dan het rapport hieronder en stuur het naar Qargo Support. U kunt doorwerken, maar gedraagt het venster zich vreemd, sluit de app dan af en start hem opnieuw.</translation>
    </message>
    <message>
        <source>The report was also saved as {path}</source>
        <translation>Het rapport is ook opgeslagen als {path}</translation>
    </message>
    <message>
        <source>&lt;b&gt;Check the report before you share it:&lt;/b&gt; it may contain personal data, such as email addresses and names of mailboxes.</source>
        <translation>&lt;b&gt;Controleer het rapport voordat u het deelt:&lt;/b&gt; het kan persoonsgegevens bevatten, zoals e-mailadressen en namen van mailboxen.</translation>
    </message>
    <message>
        <source>Problem report</source>
        <translation>Probleemrapport</translation>
    </message>
    <message>
        <source>&amp;Copy report</source>
        <translation>Rapport &amp;kopiëren</translation>
    </message>
    <message>
        <source>&amp;Quit {app}</source>
        <translation>{app} af&amp;sluiten</translation>
    </message>
    <message>
        <source>&amp;Keep working</source>
        <translation>&amp;Doorwerken</translation>
    </message>
    <message>
        <source>Save support bundle</source>
        <translation>Ondersteuningspakket opslaan</translation>
    </message>
    <message>
        <source>Zip archives (*.zip)</source>
        <translation>Zip-archieven (*.zip)</translation>
    </message>
    <message>
        <source>Built with {components}.</source>
        <translation>Gemaakt met {components}.</translation>
    </message>
    <message>
        <source>{app} {version} is proprietary software. It uses the components below under their own licences.</source>
        <translation>{app} {version} is eigendomssoftware. De app gebruikt de onderstaande onderdelen onder hun eigen licenties.</translation>
    </message>
    <message>
        <source>Qt and PySide6 are used under the GNU Lesser General Public License version 3; their source code is available from qt.io.</source>
        <translation>Qt en PySide6 worden gebruikt onder de GNU Lesser General Public License versie 3; hun broncode is verkrijgbaar via qt.io.</translation>
    </message>
    <message>
        <source>About {app}</source>
        <translation>Over {app}</translation>
    </message>
    <message>
        <source>&lt;b&gt;{app}&lt;/b&gt; {version}&lt;br&gt;Keeps your organisation&apos;s linked Microsoft 365 mailboxes healthy.</source>
        <translation>&lt;b&gt;{app}&lt;/b&gt; {version}&lt;br&gt;Houdt de gekoppelde Microsoft 365-mailboxen van uw organisatie gezond.</translation>
    </message>
    <message>
        <source>{app}: settings</source>
        <translation>{app}: instellingen</translation>
    </message>
    <message>
        <source>The app cannot start because some settings cannot be used.</source>
        <translation>De app kan niet starten omdat sommige instellingen niet bruikbaar zijn.</translation>
    </message>
    <message>
        <source>Correct them and start the app again.</source>
        <translation>Corrigeer ze en start de app opnieuw.</translation>
    </message>
    <message>
        <source>{app} is already running but does not answer.</source>
        <translation>{app} is al gestart, maar reageert niet.</translation>
    </message>
    <message>
        <source>Close the other window, or end it in the Task Manager, then start the app again.</source>
        <translation>Sluit het andere venster of beëindig het in Taakbeheer, en start de app daarna opnieuw.</translation>
    </message>
</context>
<context>
    <name>selftest</name>
    <message>
        <source>Reach Qargo, Microsoft sign-in and Microsoft Graph</source>
        <translation>Qargo, Microsoft-aanmelding en Microsoft Graph bereiken</translation>
    </message>
    <message>
        <source>Sign in as the mailbox</source>
        <translation>Aanmelden als de mailbox</translation>
    </message>
    <message>
        <source>Send a test message to the mailbox itself</source>
        <translation>Een testbericht naar de mailbox zelf versturen</translation>
    </message>
    <message>
        <source>Wait for it to arrive</source>
        <translation>Wachten tot het aankomt</translation>
    </message>
    <message>
        <source>Wait for Qargo&apos;s sync to see it</source>
        <translation>Wachten tot de synchronisatie van Qargo het ziet</translation>
    </message>
    <message>
        <source>Delete the test message</source>
        <translation>Het testbericht verwijderen</translation>
    </message>
    <message>
        <source>Passed</source>
        <translation>Geslaagd</translation>
    </message>
    <message>
        <source>Passed with warnings</source>
        <translation>Geslaagd met waarschuwingen</translation>
    </message>
    <message>
        <source>Failed</source>
        <translation>Mislukt</translation>
    </message>
    <message>
        <source>Could not run</source>
        <translation>Kon niet worden uitgevoerd</translation>
    </message>
    <message>
        <source>Cancelled</source>
        <translation>Geannuleerd</translation>
    </message>
</context>
<context>
    <name>status</name>
    <message>
        <source>Unknown ({raw_status})</source>
        <translation>Onbekend ({raw_status})</translation>
    </message>
    <message>
        <source>Linked</source>
        <translation>Gekoppeld</translation>
    </message>
    <message>
        <source>Qargo reads and sends this mailbox&apos;s mail.</source>
        <translation>Qargo leest en verstuurt de mail van deze mailbox.</translation>
    </message>
    <message>
        <source>Nothing to do. Run a test if mail seems slow; reauthorise if scopes changed.</source>
        <translation>Niets te doen. Voer een test uit als de mail traag lijkt; autoriseer opnieuw als de machtigingen zijn gewijzigd.</translation>
    </message>
    <message>
        <source>Unlinked</source>
        <translation>Niet gekoppeld</translation>
    </message>
    <message>
        <source>Qargo has no access to this mailbox.</source>
        <translation>Qargo heeft geen toegang tot deze mailbox.</translation>
    </message>
    <message>
        <source>Choose Authorise API and sign in as the mailbox account.</source>
        <translation>Kies API autoriseren en meld u aan met het account van de mailbox.</translation>
    </message>
    <message>
        <source>Pending authorisation: Reauthorise API</source>
        <translation>Autorisatie in behandeling: API opnieuw autoriseren</translation>
    </message>
    <message>
        <source>The mailbox&apos;s grant is no longer valid (password change, revoked consent, long inactivity or new permissions). Mail in Qargo is not updating.</source>
        <translation>De machtiging van de mailbox is niet meer geldig (gewijzigd wachtwoord, ingetrokken toestemming, lange inactiviteit of nieuwe machtigingen). De mail in Qargo wordt niet bijgewerkt.</translation>
    </message>
    <message>
        <source>Choose Reauthorise API and sign in as the mailbox account.</source>
        <translation>Kies API opnieuw autoriseren en meld u aan met het account van de mailbox.</translation>
    </message>
    <message>
        <source>Pending authorisation: Reset API link status</source>
        <translation>Autorisatie in behandeling: API-koppelingsstatus resetten</translation>
    </message>
    <message>
        <source>The last authorisation failed or was abandoned. Mail in Qargo is not updating.</source>
        <translation>De laatste autorisatie is mislukt of afgebroken. De mail in Qargo wordt niet bijgewerkt.</translation>
    </message>
    <message>
        <source>Choose Reset API link status, then authorise the mailbox again.</source>
        <translation>Kies API-koppelingsstatus resetten en autoriseer de mailbox daarna opnieuw.</translation>
    </message>
    <message>
        <source>Authorising...</source>
        <translation>Bezig met autoriseren...</translation>
    </message>
    <message>
        <source>An authorisation is in progress in someone&apos;s browser.</source>
        <translation>Er loopt een autorisatie in de browser van iemand.</translation>
    </message>
    <message>
        <source>Wait for it to finish, or cancel it if it is your own.</source>
        <translation>Wacht tot die klaar is, of annuleer hem als het uw eigen autorisatie is.</translation>
    </message>
    <message>
        <source>Unknown</source>
        <translation>Onbekend</translation>
    </message>
    <message>
        <source>Qargo reported a state this version of the app does not know.</source>
        <translation>Qargo meldt een status die deze versie van de app niet kent.</translation>
    </message>
    <message>
        <source>Refresh the list; update the app if this stays.</source>
        <translation>Vernieuw de lijst; werk de app bij als dit zo blijft.</translation>
    </message>
</context>
<context>
    <name>texts</name>
    <message>
        <source>{text} ({shortcut})</source>
        <comment>a tooltip and its keyboard shortcut</comment>
        <translation>{text} ({shortcut})</translation>
    </message>
    <message>
        <source>Reason: {reason}</source>
        <translation>Reden: {reason}</translation>
    </message>
    <message>
        <source>The attempt expires at {time}.</source>
        <translation>De poging verloopt op {time}.</translation>
    </message>
    <message>
        <source>Status: {status}. {next_step}</source>
        <translation>Status: {status}. {next_step}</translation>
    </message>
    <message>
        <source>{date}, {time}</source>
        <comment>a date and a time of day</comment>
        <translation>{date} om {time}</translation>
    </message>
    <message>
        <source>Never</source>
        <translation>Nooit</translation>
    </message>
    <message>
        <source>Just now</source>
        <translation>Zojuist</translation>
    </message>
    <message numerus="yes">
        <source>%n min ago</source>
        <translation>
            <numerusform>%n min geleden</numerusform>
            <numerusform>%n min geleden</numerusform>
        </translation>
    </message>
    <message numerus="yes">
        <source>%n hour(s) ago</source>
        <translation>
            <numerusform>%n uur geleden</numerusform>
            <numerusform>%n uur geleden</numerusform>
        </translation>
    </message>
    <message>
        <source>Yesterday</source>
        <translation>Gisteren</translation>
    </message>
    <message numerus="yes">
        <source>%n day(s) ago</source>
        <translation>
            <numerusform>%n dag geleden</numerusform>
            <numerusform>%n dagen geleden</numerusform>
        </translation>
    </message>
    <message>
        <source>Something went wrong that the app does not recognise ({kind}).</source>
        <translation>Er ging iets mis dat de app niet herkent ({kind}).</translation>
    </message>
    <message>
        <source>The browser signed in {signed_in_as}, but this mailbox is {needed}. Nothing was changed in Qargo. Sign out of the other account in the browser, or use a private window, then try again and sign in as {needed}.</source>
        <translation>De browser heeft {signed_in_as} aangemeld, maar deze mailbox is {needed}. Er is niets gewijzigd in Qargo. Meld het andere account af in de browser, of gebruik een privévenster, en probeer het opnieuw met {needed}.</translation>
    </message>
    <message>
        <source>Error code: {code}</source>
        <translation>Foutcode: {code}</translation>
    </message>
    <message>
        <source>Code: {code}</source>
        <translation>Code: {code}</translation>
    </message>
    <message>
        <source>Correlation id: {id}</source>
        <translation>Correlatie-id: {id}</translation>
    </message>
    <message>
        <source>{message} (code {code})</source>
        <translation>{message} (code {code})</translation>
    </message>
    <message>
        <source>Unrecognised error (code {code})</source>
        <translation>Onbekende fout (code {code})</translation>
    </message>
    <message>
        <source>No error recorded.</source>
        <translation>Geen fout vastgelegd.</translation>
    </message>
    <message>
        <source>The app does not recognise this error.</source>
        <translation>De app herkent deze fout niet.</translation>
    </message>
    <message>
        <source>Contact Qargo Support with the code below.</source>
        <translation>Neem contact op met Qargo Support en vermeld de code hieronder.</translation>
    </message>
    <message>
        <source>Message from Qargo: {message}</source>
        <translation>Bericht van Qargo: {message}</translation>
    </message>
    <message>
        <source>At: {time}</source>
        <translation>Tijdstip: {time}</translation>
    </message>
    <message numerus="yes">
        <source>%Ln mailbox(es)</source>
        <translation>
            <numerusform>%Ln mailbox</numerusform>
            <numerusform>%Ln mailboxen</numerusform>
        </translation>
    </message>
</context>
</TS>
