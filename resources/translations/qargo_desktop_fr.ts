<?xml version="1.0" encoding="utf-8"?>
<!DOCTYPE TS>
<TS version="2.1" language="fr_FR" sourcelanguage="en_GB">
<context>
    <name>ConnectionState</name>
    <message>
        <source>Starting...</source>
        <translation>Démarrage...</translation>
    </message>
    <message>
        <source>Signing in...</source>
        <translation>Connexion...</translation>
    </message>
    <message>
        <source>Signed out</source>
        <translation>Déconnecté</translation>
    </message>
    <message>
        <source>Online</source>
        <translation>En ligne</translation>
    </message>
    <message>
        <source>Offline</source>
        <translation>Hors ligne</translation>
    </message>
    <message>
        <source>Sign-in expired</source>
        <translation>Connexion expirée</translation>
    </message>
</context>
<context>
    <name>DetailPane</name>
    <message>
        <source>Sign in as the mailbox in the browser so that Qargo can use it</source>
        <translation>Se connecter en tant que boîte aux lettres dans le navigateur pour que Qargo puisse l&apos;utiliser</translation>
    </message>
    <message>
        <source>Sign in as the mailbox again to renew Qargo&apos;s access</source>
        <translation>Se reconnecter en tant que boîte aux lettres pour renouveler l&apos;accès de Qargo</translation>
    </message>
    <message>
        <source>Clear the failed link so that the mailbox can be authorised again</source>
        <translation>Effacer le lien en échec pour pouvoir autoriser de nouveau la boîte aux lettres</translation>
    </message>
    <message>
        <source>Send a test message and time its way into Qargo</source>
        <translation>Envoyer un message de test et mesurer le temps qu&apos;il met à arriver dans Qargo</translation>
    </message>
    <message>
        <source>Stop your authorisation in progress</source>
        <translation>Arrêter votre autorisation en cours</translation>
    </message>
    <message>
        <source>Remove the mailbox from Qargo&apos;s list</source>
        <translation>Retirer la boîte aux lettres de la liste de Qargo</translation>
    </message>
    <message>
        <source>Reason</source>
        <translation>Motif</translation>
    </message>
    <message>
        <source>State changed</source>
        <translation>Changement d&apos;état</translation>
    </message>
    <message>
        <source>Linked</source>
        <translation>Lien établi</translation>
    </message>
    <message>
        <source>Linked by</source>
        <translation>Lien établi par</translation>
    </message>
    <message>
        <source>Permissions</source>
        <translation>Autorisations accordées</translation>
    </message>
    <message>
        <source>Last sync</source>
        <translation>Dernière synchronisation</translation>
    </message>
    <message>
        <source>Last error</source>
        <translation>Dernière erreur</translation>
    </message>
    <message>
        <source>Authorisation</source>
        <translation>Autorisation</translation>
    </message>
    <message>
        <source>Mailbox id</source>
        <translation>Identifiant de la boîte aux lettres</translation>
    </message>
    <message>
        <source>Version</source>
        <translation>Version</translation>
    </message>
    <message>
        <source>Mailbox details</source>
        <translation>Détails de la boîte aux lettres</translation>
    </message>
    <message>
        <source>Select a mailbox to see its details, what you can do about it and its history.</source>
        <translation>Sélectionnez une boîte aux lettres pour voir ses détails, les actions possibles et son historique.</translation>
    </message>
    <message>
        <source>Nothing can be done in this state except refreshing the list.</source>
        <translation>Dans cet état, vous pouvez seulement actualiser la liste.</translation>
    </message>
    <message>
        <source>{title}:</source>
        <translation>{title}&#xa0;:</translation>
    </message>
    <message>
        <source>History</source>
        <translation>Historique</translation>
    </message>
    <message>
        <source>Re&amp;try</source>
        <translation>&amp;Réessayer</translation>
    </message>
    <message>
        <source>Load the history again</source>
        <translation>Recharger l&apos;historique</translation>
    </message>
    <message>
        <source>Audit trail</source>
        <translation>Journal d&apos;audit</translation>
    </message>
    <message>
        <source>Who did what to this mailbox and when, newest first</source>
        <translation>Qui a fait quoi sur cette boîte aux lettres et quand, le plus récent d&apos;abord</translation>
    </message>
    <message>
        <source>The mailbox&apos;s link state</source>
        <translation>L&apos;état du lien de la boîte aux lettres</translation>
    </message>
    <message>
        <source>Loading the history...</source>
        <translation>Chargement de l&apos;historique...</translation>
    </message>
    <message>
        <source>Nothing has been recorded yet.</source>
        <translation>Rien n&apos;a encore été enregistré.</translation>
    </message>
    <message>
        <source>No display name</source>
        <translation>Aucun nom d&apos;affichage</translation>
    </message>
    <message>
        <source>Never</source>
        <translation>Jamais</translation>
    </message>
    <message>
        <source>{relative} ({time})</source>
        <translation>{relative} ({time})</translation>
    </message>
    <message>
        <source>In progress, expires at {time}</source>
        <translation>En cours, expire le {time}</translation>
    </message>
    <message>
        <source>In progress</source>
        <translation>En cours</translation>
    </message>
    <message>
        <source>{time} ({relative})</source>
        <translation>{time} ({relative})</translation>
    </message>
    <message>
        <source>The history could not be loaded. {problem}</source>
        <translation>Impossible de charger l&apos;historique. {problem}</translation>
    </message>
</context>
<context>
    <name>DeviceCodeDialog</name>
    <message>
        <source>Sign in on another device</source>
        <translation>Se connecter sur un autre appareil</translation>
    </message>
    <message>
        <source>your Qargo super admin account</source>
        <translation>votre compte super administrateur Qargo</translation>
    </message>
    <message>
        <source>Asking Microsoft for a code...</source>
        <translation>Demande d&apos;un code à Microsoft...</translation>
    </message>
    <message>
        <source>One more code: allow the mail permissions</source>
        <translation>Encore un code&#xa0;: autorisez l&apos;accès à la messagerie</translation>
    </message>
    <message>
        <source>Microsoft gives one code per service. Open the address again on the other device, enter this second code, sign in as {account} and accept the permissions Qargo asks for.</source>
        <translation>Microsoft donne un code par service. Ouvrez de nouveau l&apos;adresse sur l&apos;autre appareil, saisissez ce deuxième code, connectez-vous avec {account} et acceptez les autorisations demandées par Qargo.</translation>
    </message>
    <message>
        <source>On any device with a browser (a phone is fine), open the address below, enter the code and sign in as {account}. This window continues by itself when you are done.</source>
        <translation>Sur n&apos;importe quel appareil doté d&apos;un navigateur (un téléphone convient), ouvrez l&apos;adresse ci-dessous, saisissez le code et connectez-vous avec {account}. Cette fenêtre reprend d&apos;elle-même une fois que vous avez terminé.</translation>
    </message>
    <message>
        <source>1. Open this address:</source>
        <translation>1. Ouvrez cette adresse&#xa0;:</translation>
    </message>
    <message>
        <source>2. Enter this code:</source>
        <translation>2. Saisissez ce code&#xa0;:</translation>
    </message>
    <message>
        <source>Copy &amp;address</source>
        <translation>Copier l&apos;&amp;adresse</translation>
    </message>
    <message>
        <source>&amp;Copy code</source>
        <translation>&amp;Copier le code</translation>
    </message>
    <message>
        <source>Sign-in address</source>
        <translation>Adresse de connexion</translation>
    </message>
    <message>
        <source>Sign-in code</source>
        <translation>Code de connexion</translation>
    </message>
    <message>
        <source>Asking for a code</source>
        <translation>Demande d&apos;un code</translation>
    </message>
    <message>
        <source>Time left</source>
        <translation>Temps restant</translation>
    </message>
    <message>
        <source>Only enter the code on Microsoft&apos;s page you opened yourself. Nobody from Qargo will ask you for it.</source>
        <translation>Ne saisissez le code que sur la page Microsoft que vous avez ouverte vous-même. Personne chez Qargo ne vous le demandera.</translation>
    </message>
    <message>
        <source>Stop waiting (Esc)</source>
        <translation>Cesser d&apos;attendre (Échap)</translation>
    </message>
    <message>
        <source>Cancelling...</source>
        <translation>Annulation...</translation>
    </message>
    <message>
        <source>The code has expired. Cancel and start again.</source>
        <translation>Le code a expiré. Annulez et recommencez.</translation>
    </message>
    <message>
        <source>The code expires in {minutes}:{seconds}</source>
        <translation>Le code expire dans {minutes}:{seconds}</translation>
    </message>
    <message>
        <source>Copied</source>
        <translation>Copié</translation>
    </message>
    <message>
        <source>Cancelling the sign-in...</source>
        <translation>Annulation de la connexion...</translation>
    </message>
</context>
<context>
    <name>DiagnosticsWindow</name>
    <message>
        <source>Problem</source>
        <translation>Problème</translation>
    </message>
    <message>
        <source>Warning</source>
        <translation>Avertissement</translation>
    </message>
    <message>
        <source>OK</source>
        <translation>OK</translation>
    </message>
    <message>
        <source>Name lookup (DNS)</source>
        <translation>Résolution du nom (DNS)</translation>
    </message>
    <message>
        <source>Connection (TCP)</source>
        <translation>Connexion (TCP)</translation>
    </message>
    <message>
        <source>Proxy tunnel (CONNECT)</source>
        <translation>Tunnel par le proxy (CONNECT)</translation>
    </message>
    <message>
        <source>Secure handshake (TLS)</source>
        <translation>Négociation sécurisée (TLS)</translation>
    </message>
    <message>
        <source>Request (HTTP)</source>
        <translation>Requête (HTTP)</translation>
    </message>
    <message>
        <source>Public certificate authority</source>
        <translation>Autorité de certification publique</translation>
    </message>
    <message>
        <source>The extra CA in the settings</source>
        <translation>L&apos;autorité supplémentaire des paramètres</translation>
    </message>
    <message>
        <source>TLS-inspecting proxy</source>
        <translation>Proxy qui inspecte le TLS</translation>
    </message>
    <message>
        <source>Unknown certificate authority</source>
        <translation>Autorité de certification inconnue</translation>
    </message>
    <message>
        <source>The services were not checked: their addresses are not known, or checking was turned off.</source>
        <translation>Les services n&apos;ont pas été vérifiés&#xa0;: leurs adresses sont inconnues, ou la vérification a été désactivée.</translation>
    </message>
    <message>
        <source>Reachable</source>
        <translation>Joignable</translation>
    </message>
    <message>
        <source>Not reachable</source>
        <translation>Injoignable</translation>
    </message>
    <message>
        <source>Not run</source>
        <translation>Non exécuté</translation>
    </message>
    <message>
        <source>Failed</source>
        <translation>Échec</translation>
    </message>
    <message>
        <source>Certificate</source>
        <translation>Certificat</translation>
    </message>
    <message>
        <source>Direct connection</source>
        <translation>Connexion directe</translation>
    </message>
    <message>
        <source>Proxy</source>
        <translation>Proxy</translation>
    </message>
    <message>
        <source>Check</source>
        <translation>Vérification</translation>
    </message>
    <message>
        <source>Result</source>
        <translation>Résultat</translation>
    </message>
    <message>
        <source>Time</source>
        <translation>Durée</translation>
    </message>
    <message>
        <source>What it found</source>
        <translation>Constat</translation>
    </message>
    <message>
        <source>What it means:</source>
        <translation>Ce que cela signifie&#xa0;:</translation>
    </message>
    <message>
        <source>Setting</source>
        <translation>Paramètre</translation>
    </message>
    <message>
        <source>{setting} (from {source})</source>
        <translation>{setting} (source&#xa0;: {source})</translation>
    </message>
    <message>
        <source>Difference</source>
        <translation>Écart</translation>
    </message>
    <message>
        <source>Measured</source>
        <translation>Mesuré</translation>
    </message>
    <message>
        <source>{offset:+.1f} s, give or take {uncertainty:.1f} s ({samples} answers)</source>
        <translation>{offset:+.1f}&#xa0;s, à {uncertainty:.1f}&#xa0;s près ({samples} réponses)</translation>
    </message>
    <message>
        <source>Clock</source>
        <translation>Horloge</translation>
    </message>
    <message>
        <source>Keyring</source>
        <translation>Trousseau de clés</translation>
    </message>
    <message>
        <source>Usable</source>
        <translation>Utilisable</translation>
    </message>
    <message>
        <source>Not usable</source>
        <translation>Inutilisable</translation>
    </message>
    <message>
        <source>Backend</source>
        <translation>Back-end</translation>
    </message>
    <message>
        <source>Why</source>
        <translation>Pourquoi</translation>
    </message>
    <message>
        <source>Your sign-in (admin)</source>
        <translation>Votre connexion (administrateur)</translation>
    </message>
    <message>
        <source>Mailbox accounts</source>
        <translation>Comptes des boîtes aux lettres</translation>
    </message>
    <message>
        <source>No saved sign-ins were found.</source>
        <translation>Aucune connexion enregistrée n&apos;a été trouvée.</translation>
    </message>
    <message>
        <source>State</source>
        <translation>État</translation>
    </message>
    <message>
        <source>No saved sign-ins yet</source>
        <translation>Aucune connexion enregistrée pour l&apos;instant</translation>
    </message>
    <message>
        <source>Kept encrypted on disk</source>
        <translation>Conservé chiffré sur le disque</translation>
    </message>
    <message>
        <source>Kept in memory only, until the app closes</source>
        <translation>Conservé en mémoire uniquement, jusqu&apos;à la fermeture de l&apos;application</translation>
    </message>
    <message>
        <source>Key kept in</source>
        <translation>Clé conservée dans</translation>
    </message>
    <message>
        <source>File</source>
        <translation>Fichier</translation>
    </message>
    <message>
        <source>Accounts</source>
        <translation>Comptes</translation>
    </message>
    <message>
        <source>none</source>
        <translation>aucun</translation>
    </message>
    <message>
        <source>expired</source>
        <translation>expiré</translation>
    </message>
    <message>
        <source>valid</source>
        <translation>valide</translation>
    </message>
    <message>
        <source>until {time}</source>
        <translation>jusqu&apos;à {time}</translation>
    </message>
    <message>
        <source>Access for</source>
        <translation>Accès pour</translation>
    </message>
    <message>
        <source>Sign-in last renewed</source>
        <translation>Dernier renouvellement de la connexion</translation>
    </message>
    <message>
        <source>not loaded</source>
        <translation>non chargé</translation>
    </message>
    <message>
        <source>App</source>
        <translation>Application</translation>
    </message>
    <message>
        <source>Operating system</source>
        <translation>Système d&apos;exploitation</translation>
    </message>
    <message>
        <source>Versions</source>
        <translation>Versions</translation>
    </message>
    <message>
        <source>Folders</source>
        <translation>Dossiers</translation>
    </message>
    <message>
        <source>No warnings or errors in the log.</source>
        <translation>Aucun avertissement ni aucune erreur dans le journal.</translation>
    </message>
    <message>
        <source>When</source>
        <translation>Quand</translation>
    </message>
    <message>
        <source>Level</source>
        <translation>Niveau</translation>
    </message>
    <message>
        <source>What happened (newest first)</source>
        <translation>Ce qui s&apos;est passé (le plus récent d&apos;abord)</translation>
    </message>
    <message>
        <source>Checking...</source>
        <translation>Vérification...</translation>
    </message>
    <message>
        <source>Checking: {step}...</source>
        <translation>Vérification&#xa0;: {step}...</translation>
    </message>
    <message>
        <source>The checks could not run: {problem}</source>
        <translation>Les vérifications n&apos;ont pas pu être effectuées&#xa0;: {problem}</translation>
    </message>
    <message>
        <source>The checks stopped unexpectedly: {problem}</source>
        <translation>Les vérifications se sont arrêtées de façon inattendue&#xa0;: {problem}</translation>
    </message>
    <message>
        <source>Not checked yet.</source>
        <translation>Pas encore vérifié.</translation>
    </message>
    <message numerus="yes">
        <source>%n problem(s) found</source>
        <translation>
            <numerusform>%n problème trouvé</numerusform>
            <numerusform>%n problèmes trouvés</numerusform>
        </translation>
    </message>
    <message numerus="yes">
        <source>No problems, %n warning(s)</source>
        <translation>
            <numerusform>Aucun problème, %n avertissement</numerusform>
            <numerusform>Aucun problème, %n avertissements</numerusform>
        </translation>
    </message>
    <message>
        <source>Nothing wrong found</source>
        <translation>Aucun problème trouvé</translation>
    </message>
    <message>
        <source>{verdict}. Checked {when}, in {seconds:.1f} s.</source>
        <translation>{verdict}. Vérifié le {when}, en {seconds:.1f}&#xa0;s.</translation>
    </message>
    <message>
        <source>The report was copied.</source>
        <translation>Le rapport a été copié.</translation>
    </message>
    <message>
        <source>Saving the support bundle...</source>
        <translation>Enregistrement du dossier d&apos;assistance...</translation>
    </message>
    <message>
        <source>The support bundle could not be saved: {problem}</source>
        <translation>Impossible d&apos;enregistrer le dossier d&apos;assistance&#xa0;: {problem}</translation>
    </message>
    <message>
        <source>The folder could not be opened. It is {folder}</source>
        <translation>Impossible d&apos;ouvrir le dossier. Il se trouve ici&#xa0;: {folder}</translation>
    </message>
    <message>
        <source>{app}: diagnostics</source>
        <translation>{app}&#xa0;: diagnostic</translation>
    </message>
    <message>
        <source>Diagnostics</source>
        <translation>Diagnostic</translation>
    </message>
    <message>
        <source>Working</source>
        <translation>Traitement en cours</translation>
    </message>
    <message>
        <source>Findings, worst first</source>
        <translation>Constats, les plus graves d&apos;abord</translation>
    </message>
    <message>
        <source>The evidence</source>
        <translation>Les éléments recueillis</translation>
    </message>
    <message>
        <source>Send the support bundle to Qargo Support</source>
        <translation>Envoyez le dossier d&apos;assistance au support Qargo</translation>
    </message>
    <message>
        <source>&amp;Bundle:</source>
        <translation>&amp;Dossier d&apos;assistance&#xa0;:</translation>
    </message>
    <message>
        <source>Where the support bundle was saved</source>
        <translation>Emplacement du dossier d&apos;assistance enregistré</translation>
    </message>
    <message>
        <source>&amp;Open folder</source>
        <translation>&amp;Ouvrir le dossier</translation>
    </message>
    <message>
        <source>Show the bundle in the file manager</source>
        <translation>Afficher le dossier d&apos;assistance dans le gestionnaire de fichiers</translation>
    </message>
    <message>
        <source>Copy &amp;path</source>
        <translation>Copier le c&amp;hemin</translation>
    </message>
    <message>
        <source>A support bundle holds this report and the app&apos;s logs: no passwords or tokens, but account names, mailbox addresses and this computer&apos;s name and folders.</source>
        <translation>Un dossier d&apos;assistance contient ce rapport et les journaux de l&apos;application&#xa0;: aucun mot de passe ni jeton, mais des noms de comptes, des adresses de boîtes aux lettres ainsi que le nom et les dossiers de cet ordinateur.</translation>
    </message>
    <message>
        <source>&amp;Run again</source>
        <translation>&amp;Relancer</translation>
    </message>
    <message>
        <source>Check everything again</source>
        <translation>Tout vérifier de nouveau</translation>
    </message>
    <message>
        <source>&amp;Copy report</source>
        <translation>&amp;Copier le rapport</translation>
    </message>
    <message>
        <source>Copy the report as text</source>
        <translation>Copier le rapport sous forme de texte</translation>
    </message>
    <message>
        <source>&amp;Save support bundle...</source>
        <translation>&amp;Enregistrer le dossier d&apos;assistance...</translation>
    </message>
    <message>
        <source>Save the report and the logs in one zip file</source>
        <translation>Enregistrer le rapport et les journaux dans un seul fichier zip</translation>
    </message>
    <message>
        <source>Contact Qargo S&amp;upport</source>
        <translation>Contacter le s&amp;upport Qargo</translation>
    </message>
    <message>
        <source>Prepare a support bundle and see where to send it</source>
        <translation>Préparer un dossier d&apos;assistance et voir où l&apos;envoyer</translation>
    </message>
    <message>
        <source>Close</source>
        <translation>Fermer</translation>
    </message>
    <message>
        <source>Services</source>
        <translation>Services</translation>
    </message>
    <message>
        <source>Proxy and clock</source>
        <translation>Proxy et horloge</translation>
    </message>
    <message>
        <source>Keyring and sign-ins</source>
        <translation>Trousseau de clés et connexions</translation>
    </message>
    <message>
        <source>Recent problems</source>
        <translation>Problèmes récents</translation>
    </message>
    <message>
        <source>Full report</source>
        <translation>Rapport complet</translation>
    </message>
</context>
<context>
    <name>FirstRunPage</name>
    <message>
        <source>{app} is not set up yet</source>
        <translation>{app} n&apos;est pas encore configuré</translation>
    </message>
    <message>
        <source>To work with your organisation, the app needs the settings of your Microsoft 365 tenant and of Qargo. These are missing:</source>
        <translation>Pour travailler avec votre organisation, l&apos;application a besoin des paramètres de votre locataire Microsoft 365 et de Qargo. Ceux-ci manquent&#xa0;:</translation>
    </message>
    <message>
        <source>You can also try every feature now against the built-in sandbox: a simulated organisation on this computer. Nothing leaves this computer.</source>
        <translation>Vous pouvez aussi essayer dès maintenant toutes les fonctions avec le bac à sable intégré&#xa0;: une organisation simulée sur cet ordinateur. Rien ne quitte cet ordinateur.</translation>
    </message>
    <message>
        <source>Use the built-in &amp;sandbox</source>
        <translation>Utiliser le &amp;bac à sable intégré</translation>
    </message>
    <message>
        <source>{key} (or the environment variable {variable})</source>
        <translation>{key} (ou la variable d&apos;environnement {variable})</translation>
    </message>
    <message>
        <source>Add them to the settings file {file}, or ask Qargo Support for a ready-made settings file, then start the app again.</source>
        <translation>Ajoutez-les au fichier de paramètres {file}, ou demandez un fichier de paramètres prêt à l&apos;emploi au support Qargo, puis relancez l&apos;application.</translation>
    </message>
    <message>
        <source>Add them to the settings file, or ask Qargo Support for a ready-made settings file, then start the app again.</source>
        <translation>Ajoutez-les au fichier de paramètres, ou demandez un fichier de paramètres prêt à l&apos;emploi au support Qargo, puis relancez l&apos;application.</translation>
    </message>
    <message>
        <source>Missing settings</source>
        <translation>Paramètres manquants</translation>
    </message>
</context>
<context>
    <name>LinkActions</name>
    <message>
        <source>{address}: another action is still running.</source>
        <translation>{address}&#xa0;: une autre action est encore en cours.</translation>
    </message>
    <message>
        <source>Another action is still running.</source>
        <translation>Une autre action est encore en cours.</translation>
    </message>
    <message>
        <source>Reauthorise {address}</source>
        <translation>Réautoriser {address}</translation>
    </message>
    <message>
        <source>Authorise {address}</source>
        <translation>Autoriser {address}</translation>
    </message>
    <message>
        <source>Sign in as {address} in your browser</source>
        <translation>Connectez-vous en tant que {address} dans votre navigateur</translation>
    </message>
    <message>
        <source>A Microsoft sign-in page is opening in your browser. Choose or sign in as {address} (not your own admin account) and accept the permissions Qargo asks for. If the browser is signed in as someone else, copy the link below into a private window.</source>
        <translation>Une page de connexion Microsoft s&apos;ouvre dans votre navigateur. Choisissez {address} ou connectez-vous avec ce compte (pas avec votre propre compte administrateur) et acceptez les autorisations demandées par Qargo. Si le navigateur est connecté avec le compte de quelqu&apos;un d&apos;autre, copiez le lien ci-dessous dans une fenêtre de navigation privée.</translation>
    </message>
    <message>
        <source>Reauthorise {address} on another device</source>
        <translation>Réautoriser {address} sur un autre appareil</translation>
    </message>
    <message>
        <source>Authorise {address} on another device</source>
        <translation>Autoriser {address} sur un autre appareil</translation>
    </message>
    <message>
        <source>{address} is linked.</source>
        <translation>{address} est liée.</translation>
    </message>
    <message>
        <source>{address}: authorisation cancelled.</source>
        <translation>{address}&#xa0;: autorisation annulée.</translation>
    </message>
    <message>
        <source>The authorisation failed.</source>
        <translation>L&apos;autorisation a échoué.</translation>
    </message>
    <message>
        <source>Reset the API link status, then authorise again.</source>
        <translation>Réinitialisez l&apos;état du lien API, puis autorisez de nouveau.</translation>
    </message>
    <message>
        <source>Try again</source>
        <translation>Réessayer</translation>
    </message>
    <message>
        <source>{address}: the authorisation in progress was started elsewhere; it ends by itself when it expires.</source>
        <translation>{address}&#xa0;: l&apos;autorisation en cours a été lancée ailleurs&#x202f;; elle prendra fin d&apos;elle-même à son expiration.</translation>
    </message>
    <message>
        <source>Removed {address}.</source>
        <translation>{address} a été retirée.</translation>
    </message>
    <message>
        <source>Added {address}. Authorise it to link it.</source>
        <translation>{address} a été ajoutée. Autorisez-la pour la lier.</translation>
    </message>
    <message>
        <source>{address} is now Unlinked.</source>
        <translation>{address} est maintenant à l&apos;état Non lié.</translation>
    </message>
    <message>
        <source>{address} is now changed.</source>
        <translation>{address} a été modifiée.</translation>
    </message>
    <message>
        <source>{address}: someone else changed this mailbox first. The row now shows its current state; check it and try again if still needed.</source>
        <translation>{address}&#xa0;: quelqu&apos;un d&apos;autre a modifié cette boîte aux lettres avant vous. La ligne affiche maintenant son état actuel&#x202f;; vérifiez-le et réessayez si nécessaire.</translation>
    </message>
</context>
<context>
    <name>LogView</name>
    <message>
        <source>Everything (debug detail too)</source>
        <extracomment>The level filter&apos;s choices: the lowest level shown, and its words.</extracomment>
        <translation>Tout (y compris le détail de débogage)</translation>
    </message>
    <message>
        <source>Information, warnings and errors</source>
        <translation>Informations, avertissements et erreurs</translation>
    </message>
    <message>
        <source>Warnings and errors</source>
        <translation>Avertissements et erreurs</translation>
    </message>
    <message>
        <source>Errors only</source>
        <translation>Erreurs seulement</translation>
    </message>
    <message>
        <source>The log folder could not be opened. It is {folder}</source>
        <translation>Impossible d&apos;ouvrir le dossier des journaux. Il se trouve ici&#xa0;: {folder}</translation>
    </message>
    <message>
        <source>{shown} of the last {kept} entries (the app keeps {capacity})</source>
        <translation>{shown} des {kept} dernières entrées (l&apos;application en conserve {capacity})</translation>
    </message>
    <message>
        <source>{app}: log</source>
        <translation>{app}&#xa0;: journal</translation>
    </message>
    <message>
        <source>&amp;Show:</source>
        <translation>&amp;Afficher&#xa0;:</translation>
    </message>
    <message>
        <source>Which entries to show</source>
        <translation>Les entrées à afficher</translation>
    </message>
    <message>
        <source>Log entries</source>
        <translation>Entrées du journal</translation>
    </message>
    <message>
        <source>The app&apos;s recent log, newest last. Passwords, tokens and codes are removed.</source>
        <translation>Le journal récent de l&apos;application, le plus récent en dernier. Les mots de passe, jetons et codes en sont retirés.</translation>
    </message>
    <message>
        <source>&amp;Copy</source>
        <translation>&amp;Copier</translation>
    </message>
    <message>
        <source>Copy the entries shown</source>
        <translation>Copier les entrées affichées</translation>
    </message>
    <message>
        <source>Open log &amp;folder</source>
        <translation>Ouvrir le &amp;dossier des journaux</translation>
    </message>
    <message>
        <source>Show the log files, with older entries, in the file manager</source>
        <translation>Afficher les fichiers journaux, avec les entrées plus anciennes, dans le gestionnaire de fichiers</translation>
    </message>
    <message>
        <source>Close</source>
        <translation>Fermer</translation>
    </message>
</context>
<context>
    <name>MailboxTableModel</name>
    <message>
        <source>Mailbox</source>
        <translation>Boîte aux lettres</translation>
    </message>
    <message>
        <source>Display name</source>
        <translation>Nom d&apos;affichage</translation>
    </message>
    <message>
        <source>Status</source>
        <translation>État</translation>
    </message>
    <message>
        <source>Last sync</source>
        <translation>Dernière synchro</translation>
    </message>
    <message>
        <source>Last error</source>
        <translation>Dernière erreur</translation>
    </message>
    <message>
        <source>The mailbox&apos;s email address</source>
        <translation>L&apos;adresse e-mail de la boîte aux lettres</translation>
    </message>
    <message>
        <source>The name shown for the mailbox</source>
        <translation>Le nom affiché pour la boîte aux lettres</translation>
    </message>
    <message>
        <source>Whether Qargo can read and send this mailbox&apos;s mail</source>
        <translation>Si Qargo peut lire et envoyer les messages de cette boîte aux lettres</translation>
    </message>
    <message>
        <source>When Qargo last synchronised mail from this mailbox</source>
        <translation>La dernière synchronisation des messages de cette boîte aux lettres par Qargo</translation>
    </message>
    <message>
        <source>The last problem Qargo recorded for this mailbox</source>
        <translation>Le dernier problème enregistré par Qargo pour cette boîte aux lettres</translation>
    </message>
    <message>
        <source>empty</source>
        <extracomment>Returns the :class:`Mailbox` of a row.</extracomment>
        <translation>vide</translation>
    </message>
    <message>
        <source>Qargo has not synchronised mail from this mailbox yet.</source>
        <translation>Qargo n&apos;a encore synchronisé aucun message de cette boîte aux lettres.</translation>
    </message>
    <message>
        <source>Last sync: {time} (local time)</source>
        <translation>Dernière synchronisation&#xa0;: {time} (heure locale)</translation>
    </message>
</context>
<context>
    <name>MainWindow</name>
    <message>
        <source>Starting...</source>
        <extracomment>Opens the sign-in page; ``None`` means the system browser. Tests set a script. Opens a folder in the file manager (Help &gt; Open log folder). Tests replace it. Help &gt; Diagnostics and Help &gt; Show log: one window of each.</extracomment>
        <translation>Démarrage...</translation>
    </message>
    <message>
        <source>&amp;File</source>
        <translation>&amp;Fichier</translation>
    </message>
    <message>
        <source>&amp;View</source>
        <translation>&amp;Affichage</translation>
    </message>
    <message>
        <source>&amp;Mailbox</source>
        <translation>&amp;Boîte aux lettres</translation>
    </message>
    <message>
        <source>&amp;Help</source>
        <translation>A&amp;ide</translation>
    </message>
    <message>
        <source>&amp;Refresh</source>
        <translation>Actuali&amp;ser</translation>
    </message>
    <message>
        <source>Load the list again</source>
        <translation>Recharger la liste</translation>
    </message>
    <message>
        <source>&amp;Add mailbox...</source>
        <translation>A&amp;jouter une boîte aux lettres...</translation>
    </message>
    <message>
        <source>Add a Microsoft 365 mailbox for Qargo to read and send</source>
        <translation>Ajouter une boîte aux lettres Microsoft 365 que Qargo lira et utilisera pour envoyer</translation>
    </message>
    <message>
        <source>&amp;Preferences...</source>
        <translation>&amp;Préférences...</translation>
    </message>
    <message>
        <source>Language, theme, refresh, sign-in time and network</source>
        <translation>Langue, thème, actualisation, délai de connexion et réseau</translation>
    </message>
    <message>
        <source>Sign &amp;out</source>
        <translation>Se &amp;déconnecter</translation>
    </message>
    <message>
        <source>Forget your sign-in on this computer</source>
        <translation>Oublier votre connexion sur cet ordinateur</translation>
    </message>
    <message>
        <source>&amp;Quit</source>
        <translation>&amp;Quitter</translation>
    </message>
    <message>
        <source>Close the window and stop the app</source>
        <translation>Fermer la fenêtre et arrêter l&apos;application</translation>
    </message>
    <message>
        <source>&amp;Find</source>
        <translation>&amp;Rechercher</translation>
    </message>
    <message>
        <source>Search by address or name</source>
        <translation>Rechercher par adresse ou par nom</translation>
    </message>
    <message>
        <source>&amp;Clear search and filter</source>
        <translation>&amp;Effacer la recherche et le filtre</translation>
    </message>
    <message>
        <source>Show every mailbox again</source>
        <translation>Afficher de nouveau toutes les boîtes aux lettres</translation>
    </message>
    <message>
        <source>&amp;Copy address</source>
        <translation>&amp;Copier l&apos;adresse</translation>
    </message>
    <message>
        <source>Copy the selected mailbox&apos;s address</source>
        <translation>Copier l&apos;adresse de la boîte aux lettres sélectionnée</translation>
    </message>
    <message>
        <source>&amp;Diagnostics...</source>
        <translation>&amp;Diagnostic...</translation>
    </message>
    <message>
        <source>Check settings, network, sign-ins and the services</source>
        <translation>Vérifier les paramètres, le réseau, les connexions et les services</translation>
    </message>
    <message>
        <source>Show &amp;log</source>
        <translation>Afficher le &amp;journal</translation>
    </message>
    <message>
        <source>The app&apos;s recent log, live, in a window of its own</source>
        <translation>Le journal récent de l&apos;application, en direct, dans sa propre fenêtre</translation>
    </message>
    <message>
        <source>Authorise on another &amp;device...</source>
        <translation>Autoriser sur un autre appar&amp;eil...</translation>
    </message>
    <message>
        <source>Sign in as the mailbox with a code, on a phone or another computer, when this computer&apos;s browser cannot be used</source>
        <translation>Se connecter en tant que boîte aux lettres avec un code, sur un téléphone ou un autre ordinateur, quand le navigateur de cet ordinateur est inutilisable</translation>
    </message>
    <message>
        <source>Open log &amp;folder</source>
        <translation>&amp;Ouvrir le dossier des journaux</translation>
    </message>
    <message>
        <source>Show the app&apos;s log files in the file manager</source>
        <translation>Afficher les fichiers journaux de l&apos;application dans le gestionnaire de fichiers</translation>
    </message>
    <message>
        <source>&amp;About {app}</source>
        <translation>À &amp;propos de {app}</translation>
    </message>
    <message>
        <source>Version, licences and where the app connects</source>
        <translation>Version, licences et services auxquels l&apos;application se connecte</translation>
    </message>
    <message>
        <source>Search by address or name ({shortcut})</source>
        <translation>Rechercher par adresse ou par nom ({shortcut})</translation>
    </message>
    <message>
        <source>Search mailboxes</source>
        <translation>Rechercher des boîtes aux lettres</translation>
    </message>
    <message>
        <source>Shows only mailboxes whose address or name contains the text</source>
        <translation>N&apos;affiche que les boîtes aux lettres dont l&apos;adresse ou le nom contient le texte</translation>
    </message>
    <message>
        <source>&amp;Status:</source>
        <translation>É&amp;tat&#xa0;:</translation>
    </message>
    <message>
        <source>Mailboxes</source>
        <translation>Boîtes aux lettres</translation>
    </message>
    <message>
        <source>The organisation&apos;s linked mailboxes. Arrow keys choose one; its details and actions are in the pane beside the list. The context menu key lists its actions.</source>
        <translation>Les boîtes aux lettres liées de l&apos;organisation. Les touches fléchées en choisissent une&#x202f;; ses détails et ses actions se trouvent dans le volet à côté de la liste. La touche de menu contextuel affiche ses actions.</translation>
    </message>
    <message>
        <source>Columns</source>
        <translation>Colonnes</translation>
    </message>
    <message>
        <source>Choose a column to sort the list by it</source>
        <translation>Choisissez une colonne pour trier la liste</translation>
    </message>
    <message>
        <source>Loading the list</source>
        <translation>Chargement de la liste</translation>
    </message>
    <message>
        <source>Running against the built-in sandbox: a simulated organisation on this computer.</source>
        <translation>Fonctionne avec le bac à sable intégré&#xa0;: une organisation simulée sur cet ordinateur.</translation>
    </message>
    <message>
        <source>Copied {address}</source>
        <translation>{address} copiée</translation>
    </message>
    <message>
        <source>Signed in as {user}</source>
        <translation>Connecté en tant que {user}</translation>
    </message>
    <message>
        <source>Organisation: {name}</source>
        <translation>Organisation&#xa0;: {name}</translation>
    </message>
    <message>
        <source>Signed in as {user} (not a super admin)</source>
        <translation>Connecté en tant que {user} (pas super administrateur)</translation>
    </message>
    <message>
        <source>Not signed in</source>
        <translation>Non connecté</translation>
    </message>
    <message>
        <source>Sandbox</source>
        <translation>Bac à sable</translation>
    </message>
    <message>
        <source>Environment: {name}</source>
        <translation>Environnement&#xa0;: {name}</translation>
    </message>
    <message>
        <source>{app} ({environment})</source>
        <translation>{app} ({environment})</translation>
    </message>
    <message>
        <source>Signing in...</source>
        <translation>Connexion...</translation>
    </message>
    <message>
        <source>Waiting for the browser...</source>
        <translation>En attente du navigateur...</translation>
    </message>
    <message>
        <source>Waiting for the other device...</source>
        <translation>En attente de l&apos;autre appareil...</translation>
    </message>
    <message>
        <source>Sign-in cancelled.</source>
        <translation>Connexion annulée.</translation>
    </message>
    <message>
        <source>Your sign-in has expired or was revoked, so the list below may be out of date. Sign in again to continue.</source>
        <translation>Votre connexion a expiré ou a été révoquée&#xa0;: la liste ci-dessous n&apos;est peut-être plus à jour. Reconnectez-vous pour continuer.</translation>
    </message>
    <message>
        <source>Sign in again</source>
        <translation>Se reconnecter</translation>
    </message>
    <message>
        <source>Signing out...</source>
        <translation>Déconnexion...</translation>
    </message>
    <message>
        <source>Signing out did not complete: {problem}</source>
        <translation>La déconnexion n&apos;a pas abouti&#xa0;: {problem}</translation>
    </message>
    <message numerus="yes">
        <source>%Ln loaded so far</source>
        <translation>
            <numerusform>%Ln chargée pour l&apos;instant</numerusform>
            <numerusform>%Ln chargées pour l&apos;instant</numerusform>
        </translation>
    </message>
    <message>
        <source>The list may be out of date (last refreshed {time}).</source>
        <translation>La liste n&apos;est peut-être plus à jour (dernière actualisation&#xa0;: {time}).</translation>
    </message>
    <message>
        <source>The mailboxes could not be loaded.</source>
        <translation>Impossible de charger les boîtes aux lettres.</translation>
    </message>
    <message>
        <source>Retry</source>
        <translation>Réessayer</translation>
    </message>
    <message>
        <source>Offline: list from {time}</source>
        <translation>Hors ligne&#xa0;: liste datant de {time}</translation>
    </message>
    <message>
        <source>The Qargo API cannot be reached; the list shown may be out of date.</source>
        <translation>L&apos;API Qargo est injoignable&#x202f;; la liste affichée n&apos;est peut-être plus à jour.</translation>
    </message>
    <message>
        <source>Sign in again to see the current list.</source>
        <translation>Reconnectez-vous pour voir la liste actuelle.</translation>
    </message>
    <message>
        <source>Connection: {state}</source>
        <translation>Connexion&#xa0;: {state}</translation>
    </message>
    <message>
        <source>Not refreshed yet</source>
        <translation>Pas encore actualisée</translation>
    </message>
    <message>
        <source>Refreshed {refreshed}, checked {checked}</source>
        <translation>Actualisée&#xa0;: {refreshed}, vérifiée&#xa0;: {checked}</translation>
    </message>
    <message>
        <source>Refreshed {refreshed}</source>
        <translation>Actualisée&#xa0;: {refreshed}</translation>
    </message>
    <message>
        <source>{text} (may be out of date)</source>
        <translation>{text} (peut-être plus à jour)</translation>
    </message>
    <message>
        <source>List last loaded at {time}</source>
        <translation>Liste chargée pour la dernière fois le {time}</translation>
    </message>
    <message>
        <source>Last checked for changes at {time}</source>
        <translation>Dernière recherche de modifications le {time}</translation>
    </message>
    <message>
        <source>No mailboxes match</source>
        <translation>Aucune boîte aux lettres ne correspond</translation>
    </message>
    <message>
        <source>Nothing matches the search text and state chosen.</source>
        <translation>Rien ne correspond au texte recherché et à l&apos;état choisi.</translation>
    </message>
    <message>
        <source>Clear search and filter</source>
        <translation>Effacer la recherche et le filtre</translation>
    </message>
    <message>
        <source>Loading the organisation&apos;s mailboxes...</source>
        <translation>Chargement des boîtes aux lettres de l&apos;organisation...</translation>
    </message>
    <message>
        <source>The mailboxes could not be loaded</source>
        <translation>Impossible de charger les boîtes aux lettres</translation>
    </message>
    <message>
        <source>No mailboxes yet</source>
        <translation>Aucune boîte aux lettres pour l&apos;instant</translation>
    </message>
    <message>
        <source>Add the first Microsoft 365 mailbox that Qargo should read and send mail for.</source>
        <translation>Ajoutez la première boîte aux lettres Microsoft 365 dont Qargo doit lire et envoyer les messages.</translation>
    </message>
    <message>
        <source>Add mailbox...</source>
        <translation>Ajouter une boîte aux lettres...</translation>
    </message>
    <message>
        <source>Not loaded yet</source>
        <translation>Pas encore chargée</translation>
    </message>
    <message>
        <source>Refresh to load the list.</source>
        <translation>Actualisez pour charger la liste.</translation>
    </message>
    <message>
        <source>Refresh</source>
        <translation>Actualiser</translation>
    </message>
    <message>
        <source>Organisation API: {url}</source>
        <translation>API de l&apos;organisation&#xa0;: {url}</translation>
    </message>
    <message>
        <source>The log folder could not be opened. It is {folder}</source>
        <translation>Impossible d&apos;ouvrir le dossier des journaux. Il se trouve ici&#xa0;: {folder}</translation>
    </message>
    <message>
        <source>The new proxy and certificate settings are used from the next start of the app.</source>
        <translation>Les nouveaux paramètres de proxy et de certificats s&apos;appliqueront au prochain démarrage de l&apos;application.</translation>
    </message>
    <message>
        <source>{address} is not in the organisation&apos;s list.</source>
        <translation>{address} ne figure pas dans la liste de l&apos;organisation.</translation>
    </message>
</context>
<context>
    <name>MessageBar</name>
    <message>
        <source>Information</source>
        <translation>Information</translation>
    </message>
    <message>
        <source>Warning</source>
        <translation>Avertissement</translation>
    </message>
    <message>
        <source>Error</source>
        <translation>Erreur</translation>
    </message>
    <message numerus="yes">
        <source>(%n times)</source>
        <translation>
            <numerusform>(%n fois)</numerusform>
            <numerusform>(%n fois)</numerusform>
        </translation>
    </message>
    <message>
        <source>Dismiss this message</source>
        <translation>Fermer ce message</translation>
    </message>
    <message>
        <source>Dismiss message</source>
        <translation>Fermer le message</translation>
    </message>
</context>
<context>
    <name>PreferencesDialog</name>
    <message>
        <source>Preferences</source>
        <translation>Préférences</translation>
    </message>
    <message>
        <source>Problem</source>
        <extracomment>Asks for a PEM file; tests replace it (no native file dialog in tests).</extracomment>
        <translation>Problème</translation>
    </message>
    <message>
        <source>Saved in {file}</source>
        <translation>Enregistré dans {file}</translation>
    </message>
    <message>
        <source>Save</source>
        <translation>Enregistrer</translation>
    </message>
    <message>
        <source>Appearance</source>
        <translation>Apparence</translation>
    </message>
    <message>
        <source>System language ({language})</source>
        <translation>Langue du système ({language})</translation>
    </message>
    <message>
        <source>Language</source>
        <translation>Langue</translation>
    </message>
    <message>
        <source>The language of the window&apos;s words, dates and numbers</source>
        <translation>La langue des textes, des dates et des nombres de la fenêtre</translation>
    </message>
    <message>
        <source>&amp;Language:</source>
        <translation>&amp;Langue&#xa0;:</translation>
    </message>
    <message>
        <source>Follow the system</source>
        <translation>Suivre le système</translation>
    </message>
    <message>
        <source>Light</source>
        <translation>Clair</translation>
    </message>
    <message>
        <source>Dark</source>
        <translation>Sombre</translation>
    </message>
    <message>
        <source>Theme</source>
        <translation>Thème</translation>
    </message>
    <message>
        <source>Light or dark colours, or the system&apos;s choice</source>
        <translation>Couleurs claires ou sombres, ou le choix du système</translation>
    </message>
    <message>
        <source>&amp;Theme:</source>
        <translation>&amp;Thème&#xa0;:</translation>
    </message>
    <message>
        <source>Mailbox list and sign-in</source>
        <translation>Liste des boîtes aux lettres et connexion</translation>
    </message>
    <message>
        <source> s</source>
        <translation> s</translation>
    </message>
    <message>
        <source>Off</source>
        <translation>Désactivée</translation>
    </message>
    <message>
        <source>Refresh interval in seconds</source>
        <translation>Intervalle d&apos;actualisation en secondes</translation>
    </message>
    <message>
        <source>0 turns automatic refresh off; otherwise 5 or more</source>
        <translation>0 désactive l&apos;actualisation automatique&#x202f;; sinon 5 ou plus</translation>
    </message>
    <message>
        <source>&amp;Refresh the list every:</source>
        <translation>&amp;Actualiser la liste toutes les&#xa0;:</translation>
    </message>
    <message>
        <source>Sign-in time limit in seconds</source>
        <translation>Délai de connexion en secondes</translation>
    </message>
    <message>
        <source>How long a sign-in waits for the browser (30 to 3600 s)</source>
        <translation>Durée pendant laquelle une connexion attend le navigateur (30 à 3600 s)</translation>
    </message>
    <message>
        <source>&amp;Sign-in time limit:</source>
        <translation>&amp;Délai de connexion&#xa0;:</translation>
    </message>
    <message>
        <source>Network</source>
        <translation>Réseau</translation>
    </message>
    <message>
        <source>The system&apos;s proxy settings</source>
        <translation>Les paramètres de proxy du système</translation>
    </message>
    <message>
        <source>No proxy (connect directly)</source>
        <translation>Aucun proxy (connexion directe)</translation>
    </message>
    <message>
        <source>This proxy:</source>
        <translation>Ce proxy&#xa0;:</translation>
    </message>
    <message>
        <source>Proxy</source>
        <translation>Proxy</translation>
    </message>
    <message>
        <source>&amp;Proxy:</source>
        <translation>&amp;Proxy&#xa0;:</translation>
    </message>
    <message>
        <source>Proxy address</source>
        <translation>Adresse du proxy</translation>
    </message>
    <message>
        <source>An http:// or https:// URL, with user:password@ if needed</source>
        <translation>Une URL http:// ou https://, avec utilisateur:motdepasse@ si nécessaire</translation>
    </message>
    <message>
        <source>Proxy &amp;address:</source>
        <translation>Adresse du pro&amp;xy&#xa0;:</translation>
    </message>
    <message>
        <source>None</source>
        <translation>Aucun</translation>
    </message>
    <message>
        <source>Extra CA certificates file</source>
        <translation>Fichier de certificats d&apos;autorité supplémentaires</translation>
    </message>
    <message>
        <source>A PEM file of certificates to trust besides the system&apos;s, for a proxy that inspects secure connections</source>
        <translation>Un fichier PEM de certificats à approuver en plus de ceux du système, pour un proxy qui inspecte les connexions sécurisées</translation>
    </message>
    <message>
        <source>&amp;Browse...</source>
        <translation>Pa&amp;rcourir...</translation>
    </message>
    <message>
        <source>Choose the certificates file</source>
        <translation>Choisir le fichier de certificats</translation>
    </message>
    <message>
        <source>Extra &amp;certificates:</source>
        <translation>&amp;Certificats supplémentaires&#xa0;:</translation>
    </message>
    <message>
        <source>Proxy and certificate changes apply the next time the app starts.</source>
        <translation>Les modifications du proxy et des certificats s&apos;appliqueront au prochain démarrage de l&apos;application.</translation>
    </message>
    <message>
        <source>Set by {where}, which overrides the settings file.</source>
        <translation>Défini par {where}, qui a priorité sur le fichier de paramètres.</translation>
    </message>
    <message>
        <source>Extra CA certificates</source>
        <translation>Certificats d&apos;autorité supplémentaires</translation>
    </message>
    <message>
        <source>PEM certificates (*.pem *.crt *.cer);;All files (*)</source>
        <translation>Certificats PEM (*.pem *.crt *.cer);;Tous les fichiers (*)</translation>
    </message>
    <message>
        <source>Not saved: {problem}</source>
        <translation>Non enregistré&#xa0;: {problem}</translation>
    </message>
</context>
<context>
    <name>SelfTestDialog</name>
    <message>
        <source>Waiting</source>
        <translation>En attente</translation>
    </message>
    <message>
        <source>Running</source>
        <translation>En cours</translation>
    </message>
    <message>
        <source>Passed</source>
        <translation>Réussi</translation>
    </message>
    <message>
        <source>Warning</source>
        <translation>Avertissement</translation>
    </message>
    <message>
        <source>Failed</source>
        <translation>Échec</translation>
    </message>
    <message>
        <source>Skipped</source>
        <translation>Ignoré</translation>
    </message>
    <message>
        <source>Submission</source>
        <translation>Envoi</translation>
    </message>
    <message>
        <source>Delivery</source>
        <translation>Remise</translation>
    </message>
    <message>
        <source>Qargo sync</source>
        <translation>Synchro Qargo</translation>
    </message>
    <message>
        <source>{seconds} s</source>
        <comment>a duration</comment>
        <translation>{seconds}&#xa0;s</translation>
    </message>
    <message>
        <source>Timeline of the test message</source>
        <translation>Chronologie du message de test</translation>
    </message>
    <message>
        <source>{leg}: {duration}</source>
        <translation>{leg}&#xa0;: {duration}</translation>
    </message>
    <message>
        <source>did not end</source>
        <translation>non terminé</translation>
    </message>
    <message>
        <source>No timings yet</source>
        <translation>Aucune durée pour l&apos;instant</translation>
    </message>
    <message>
        <source>Sign in as the mailbox in your browser. If it did not open, copy this link into a private window: {link}</source>
        <translation>Connectez-vous en tant que boîte aux lettres dans votre navigateur. S&apos;il ne s&apos;est pas ouvert, copiez ce lien dans une fenêtre de navigation privée&#xa0;: {link}</translation>
    </message>
    <message>
        <source>{step}: {state}</source>
        <translation>{step}&#xa0;: {state}</translation>
    </message>
    <message>
        <source>{verdict}: {summary}</source>
        <translation>{verdict}&#xa0;: {summary}</translation>
    </message>
    <message>
        <source>The test stopped unexpectedly: {problem}</source>
        <translation>Le test s&apos;est arrêté de façon inattendue&#xa0;: {problem}</translation>
    </message>
    <message>
        <source>Cancelling...</source>
        <translation>Annulation...</translation>
    </message>
    <message numerus="yes">
        <source>Running for %n s</source>
        <translation>
            <numerusform>En cours depuis %n&#xa0;s</numerusform>
            <numerusform>En cours depuis %n&#xa0;s</numerusform>
        </translation>
    </message>
    <message>
        <source>Finished in {duration}</source>
        <translation>Terminé en {duration}</translation>
    </message>
    <message>
        <source>Save self-test report</source>
        <translation>Enregistrer le rapport de test</translation>
    </message>
    <message>
        <source>Text (*.txt);;JSON (*.json)</source>
        <translation>Texte (*.txt);;JSON (*.json)</translation>
    </message>
    <message>
        <source>Test {address}</source>
        <translation>Tester {address}</translation>
    </message>
    <message>
        <source>Send and receive test of {address}</source>
        <translation>Test d&apos;envoi et de réception de {address}</translation>
    </message>
    <message>
        <source>Sends one test message from the mailbox to itself, waits for it to arrive and for Qargo&apos;s sync to see it, then deletes it.</source>
        <translation>Envoie un message de test de la boîte aux lettres à elle-même, attend qu&apos;il arrive et que la synchronisation de Qargo le voie, puis le supprime.</translation>
    </message>
    <message>
        <source>Elapsed time</source>
        <translation>Temps écoulé</translation>
    </message>
    <message>
        <source>Test steps</source>
        <translation>Étapes du test</translation>
    </message>
    <message>
        <source>Step</source>
        <translation>Étape</translation>
    </message>
    <message>
        <source>Time</source>
        <translation>Durée</translation>
    </message>
    <message>
        <source>What happened</source>
        <translation>Ce qui s&apos;est passé</translation>
    </message>
    <message>
        <source>Verdict</source>
        <translation>Verdict</translation>
    </message>
    <message>
        <source>Cancel</source>
        <translation>Annuler</translation>
    </message>
    <message>
        <source>&amp;Run again</source>
        <translation>&amp;Relancer</translation>
    </message>
    <message>
        <source>&amp;Copy report</source>
        <translation>&amp;Copier le rapport</translation>
    </message>
    <message>
        <source>&amp;Save report...</source>
        <translation>&amp;Enregistrer le rapport...</translation>
    </message>
    <message>
        <source>Close</source>
        <translation>Fermer</translation>
    </message>
</context>
<context>
    <name>SignInPage</name>
    <message>
        <source>&amp;Sign in with Microsoft</source>
        <translation>&amp;Se connecter avec Microsoft</translation>
    </message>
    <message>
        <source>Opens Microsoft&apos;s sign-in page in your browser</source>
        <translation>Ouvre la page de connexion Microsoft dans votre navigateur</translation>
    </message>
    <message>
        <source>Sign in on another &amp;device</source>
        <translation>Se connecter sur un autre appar&amp;eil</translation>
    </message>
    <message>
        <source>Shows a code to enter on a phone or another computer: for remote sessions where the browser here cannot be used</source>
        <translation>Affiche un code à saisir sur un téléphone ou un autre ordinateur&#xa0;: pour les sessions à distance où le navigateur d&apos;ici est inutilisable</translation>
    </message>
    <message>
        <source>&amp;Try again</source>
        <translation>&amp;Réessayer</translation>
    </message>
    <message>
        <source>Sign in with &amp;another account</source>
        <translation>Se connecter avec un autre &amp;compte</translation>
    </message>
    <message>
        <source>Sign &amp;out</source>
        <translation>Se &amp;déconnecter</translation>
    </message>
    <message>
        <source>Working</source>
        <translation>Traitement en cours</translation>
    </message>
    <message>
        <source>Sign in to manage your mailboxes</source>
        <translation>Connectez-vous pour gérer vos boîtes aux lettres</translation>
    </message>
    <message>
        <source>Sign in with your Qargo super admin account. Microsoft&apos;s sign-in page opens in your browser; the app continues when you are done.</source>
        <translation>Connectez-vous avec votre compte super administrateur Qargo. La page de connexion Microsoft s&apos;ouvre dans votre navigateur&#x202f;; l&apos;application reprend une fois que vous avez terminé.</translation>
    </message>
    <message>
        <source>Could not sign in</source>
        <translation>Connexion impossible</translation>
    </message>
    <message>
        <source>The app could not check your saved sign-in.</source>
        <translation>L&apos;application n&apos;a pas pu vérifier votre connexion enregistrée.</translation>
    </message>
    <message>
        <source>This account is not a Qargo super admin</source>
        <translation>Ce compte n&apos;est pas super administrateur Qargo</translation>
    </message>
    <message>
        <source>You are signed in as {user}, which is not a super admin of its Qargo organisation. Only super admins can manage linked mailboxes.</source>
        <translation>Vous êtes connecté en tant que {user}, qui n&apos;est pas super administrateur de son organisation Qargo. Seuls les super administrateurs peuvent gérer les boîtes aux lettres liées.</translation>
    </message>
    <message>
        <source>Sign in with a super admin account instead, or ask a super admin of your organisation to give this account the role.</source>
        <translation>Connectez-vous plutôt avec un compte super administrateur, ou demandez à un super administrateur de votre organisation d&apos;attribuer ce rôle à ce compte.</translation>
    </message>
</context>
<context>
    <name>StartingPage</name>
    <message>
        <source>Starting...</source>
        <translation>Démarrage...</translation>
    </message>
    <message>
        <source>Working</source>
        <translation>Traitement en cours</translation>
    </message>
</context>
<context>
    <name>StatusFilterCombo</name>
    <message>
        <source>Status filter</source>
        <translation>Filtre d&apos;état</translation>
    </message>
    <message>
        <source>Show only mailboxes in a state</source>
        <translation>N&apos;afficher que les boîtes aux lettres dans un état</translation>
    </message>
    <message>
        <source>All states</source>
        <translation>Tous les états</translation>
    </message>
    <message>
        <source>Needs attention</source>
        <translation>À traiter</translation>
    </message>
    <message>
        <source>{label} ({count})</source>
        <translation>{label} ({count})</translation>
    </message>
    <message>
        <source>{label}: {count}</source>
        <translation>{label}&#xa0;: {count}</translation>
    </message>
</context>
<context>
    <name>action</name>
    <message>
        <source>Authorise API</source>
        <translation>Autoriser l&apos;API</translation>
    </message>
    <message>
        <source>Reauthorise API</source>
        <translation>Réautoriser l&apos;API</translation>
    </message>
    <message>
        <source>Reset API link status</source>
        <translation>Réinitialiser l&apos;état du lien API</translation>
    </message>
    <message>
        <source>Test mail flow</source>
        <translation>Tester le flux de messagerie</translation>
    </message>
    <message>
        <source>Cancel authorisation</source>
        <translation>Annuler l&apos;autorisation</translation>
    </message>
    <message>
        <source>Remove from list</source>
        <translation>Retirer de la liste</translation>
    </message>
    <message>
        <source>&amp;Authorise API</source>
        <translation>&amp;Autoriser l&apos;API</translation>
    </message>
    <message>
        <source>&amp;Reauthorise API</source>
        <translation>&amp;Réautoriser l&apos;API</translation>
    </message>
    <message>
        <source>R&amp;eset API link status</source>
        <translation>Réi&amp;nitialiser l&apos;état du lien API</translation>
    </message>
    <message>
        <source>&amp;Test mail flow</source>
        <translation>&amp;Tester le flux de messagerie</translation>
    </message>
    <message>
        <source>Ca&amp;ncel authorisation</source>
        <translation>Annuler l&apos;a&amp;utorisation</translation>
    </message>
    <message>
        <source>Re&amp;move from list</source>
        <translation>Retirer de la &amp;liste</translation>
    </message>
</context>
<context>
    <name>advice</name>
    <message>
        <source>The person declined to give Qargo access to the mailbox.</source>
        <translation>La personne a refusé de donner à Qargo l&apos;accès à la boîte aux lettres.</translation>
    </message>
    <message>
        <source>Try again and choose Accept on the Microsoft consent page.</source>
        <translation>Réessayez et choisissez Accepter sur la page de consentement Microsoft.</translation>
    </message>
    <message>
        <source>Your organisation requires an administrator to approve Qargo first.</source>
        <translation>Votre organisation exige qu&apos;un administrateur approuve d&apos;abord Qargo.</translation>
    </message>
    <message>
        <source>Ask a Microsoft 365 administrator of the tenant to grant admin consent to the Qargo app, then try again.</source>
        <translation>Demandez à un administrateur Microsoft 365 du locataire d&apos;accorder le consentement administrateur à l&apos;application Qargo, puis réessayez.</translation>
    </message>
    <message>
        <source>The app registration does not allow this app&apos;s sign-in address (redirect URI).</source>
        <translation>L&apos;inscription d&apos;application n&apos;autorise pas l&apos;adresse de connexion de cette application (URI de redirection).</translation>
    </message>
    <message>
        <source>The app registration must list http://localhost as a redirect URI for mobile and desktop applications. Contact Qargo Support.</source>
        <translation>L&apos;inscription d&apos;application doit indiquer http://localhost comme URI de redirection pour les applications mobiles et de bureau. Contactez le support Qargo.</translation>
    </message>
    <message>
        <source>The account that signed in does not belong to your organisation&apos;s tenant.</source>
        <translation>Le compte connecté n&apos;appartient pas au locataire de votre organisation.</translation>
    </message>
    <message>
        <source>Sign in with an account of your organisation (sign out in the browser, or use a private window).</source>
        <translation>Connectez-vous avec un compte de votre organisation (déconnectez-vous dans le navigateur, ou utilisez une fenêtre de navigation privée).</translation>
    </message>
    <message>
        <source>Microsoft requires multi-factor authentication for this account.</source>
        <translation>Microsoft exige une authentification multifacteur pour ce compte.</translation>
    </message>
    <message>
        <source>Try again and complete the extra verification in the browser.</source>
        <translation>Réessayez et effectuez la vérification supplémentaire dans le navigateur.</translation>
    </message>
    <message>
        <source>Microsoft requires this account to register for multi-factor authentication.</source>
        <translation>Microsoft exige que ce compte s&apos;inscrive à l&apos;authentification multifacteur.</translation>
    </message>
    <message>
        <source>Try again and complete the registration in the browser.</source>
        <translation>Réessayez et terminez l&apos;inscription dans le navigateur.</translation>
    </message>
    <message>
        <source>A conditional access policy of your organisation blocked the sign-in.</source>
        <translation>Une stratégie d&apos;accès conditionnel de votre organisation a bloqué la connexion.</translation>
    </message>
    <message>
        <source>Ask your Microsoft 365 administrator which policy applies to this device or location.</source>
        <translation>Demandez à votre administrateur Microsoft 365 quelle stratégie s&apos;applique à cet appareil ou à cet emplacement.</translation>
    </message>
    <message>
        <source>The mailbox&apos;s grant was revoked (often after a password change).</source>
        <translation>L&apos;accès accordé pour la boîte aux lettres a été révoqué (souvent après un changement de mot de passe).</translation>
    </message>
    <message>
        <source>Reauthorise the mailbox.</source>
        <translation>Réautorisez la boîte aux lettres.</translation>
    </message>
    <message>
        <source>The sign-in expired after a long time without use.</source>
        <translation>La connexion a expiré après une longue période d&apos;inutilisation.</translation>
    </message>
    <message>
        <source>Sign in again.</source>
        <translation>Reconnectez-vous.</translation>
    </message>
    <message>
        <source>The sign-in expired.</source>
        <translation>La connexion a expiré.</translation>
    </message>
    <message>
        <source>The sign-in code was already used.</source>
        <translation>Le code de connexion a déjà été utilisé.</translation>
    </message>
    <message>
        <source>Start the sign-in again.</source>
        <translation>Recommencez la connexion.</translation>
    </message>
    <message>
        <source>The sign-in could not be verified (PKCE check failed).</source>
        <translation>La connexion n&apos;a pas pu être vérifiée (échec de la vérification PKCE).</translation>
    </message>
    <message>
        <source>Start the sign-in again. If it happens again, contact Qargo Support.</source>
        <translation>Recommencez la connexion. Si cela se reproduit, contactez le support Qargo.</translation>
    </message>
    <message>
        <source>The app registration does not allow sign-in on another device.</source>
        <translation>L&apos;inscription d&apos;application n&apos;autorise pas la connexion sur un autre appareil.</translation>
    </message>
    <message>
        <source>A Microsoft 365 administrator must turn on &apos;Allow public client flows&apos; in the Qargo app registration, or sign in with the browser on this computer instead.</source>
        <translation>Un administrateur Microsoft 365 doit activer « Autoriser les flux clients publics » dans l&apos;inscription d&apos;application Qargo&#x202f;; sinon, connectez-vous plutôt avec le navigateur de cet ordinateur.</translation>
    </message>
    <message>
        <source>The Qargo app is not known in this tenant.</source>
        <translation>L&apos;application Qargo est inconnue dans ce locataire.</translation>
    </message>
    <message>
        <source>Check the client id and authority in the settings, or contact Qargo Support.</source>
        <translation>Vérifiez l&apos;identifiant client et l&apos;autorité dans les paramètres, ou contactez le support Qargo.</translation>
    </message>
    <message>
        <source>Microsoft sign-in had a temporary problem.</source>
        <translation>La connexion Microsoft a rencontré un problème temporaire.</translation>
    </message>
    <message>
        <source>Try again in a minute.</source>
        <translation>Réessayez dans une minute.</translation>
    </message>
    <message>
        <source>Access was not granted in the browser.</source>
        <translation>L&apos;accès n&apos;a pas été accordé dans le navigateur.</translation>
    </message>
    <message>
        <source>Microsoft needs you to sign in again in the browser.</source>
        <translation>Microsoft vous demande de vous reconnecter dans le navigateur.</translation>
    </message>
    <message>
        <source>Consent is needed before Qargo can use this account.</source>
        <translation>Un consentement est nécessaire pour que Qargo puisse utiliser ce compte.</translation>
    </message>
    <message>
        <source>Try again and accept the consent page.</source>
        <translation>Réessayez et acceptez la page de consentement.</translation>
    </message>
    <message>
        <source>The saved sign-in is no longer valid.</source>
        <translation>La connexion enregistrée n&apos;est plus valide.</translation>
    </message>
    <message>
        <source>Microsoft sign-in sent an answer the app could not use.</source>
        <translation>La connexion Microsoft a renvoyé une réponse inutilisable par l&apos;application.</translation>
    </message>
    <message>
        <source>Try again. If it keeps happening, sign out and sign in again; if that fails too, contact Qargo Support.</source>
        <translation>Réessayez. Si cela continue, déconnectez-vous et reconnectez-vous&#x202f;; si cela échoue aussi, contactez le support Qargo.</translation>
    </message>
    <message>
        <source>Microsoft sign-in is busy or temporarily unavailable.</source>
        <translation>La connexion Microsoft est surchargée ou temporairement indisponible.</translation>
    </message>
    <message>
        <source>Waiting for the sign-in to be completed on the other device.</source>
        <translation>En attente de la fin de la connexion sur l&apos;autre appareil.</translation>
    </message>
    <message>
        <source>The sign-in code expired before it was used.</source>
        <translation>Le code de connexion a expiré avant d&apos;être utilisé.</translation>
    </message>
    <message>
        <source>Start the sign-in again and enter the code sooner.</source>
        <translation>Recommencez la connexion et saisissez le code plus rapidement.</translation>
    </message>
    <message>
        <source>The sign-in was declined on the other device.</source>
        <translation>La connexion a été refusée sur l&apos;autre appareil.</translation>
    </message>
    <message>
        <source>Start the sign-in again and choose Accept on the other device.</source>
        <translation>Recommencez la connexion et choisissez Accepter sur l&apos;autre appareil.</translation>
    </message>
    <message>
        <source>The sign-in code was not recognised.</source>
        <translation>Le code de connexion n&apos;a pas été reconnu.</translation>
    </message>
    <message>
        <source>Start the sign-in again and enter the new code exactly as shown.</source>
        <translation>Recommencez la connexion et saisissez le nouveau code exactement tel qu&apos;affiché.</translation>
    </message>
    <message>
        <source>This account is not a Qargo super admin.</source>
        <translation>Ce compte n&apos;est pas super administrateur Qargo.</translation>
    </message>
    <message>
        <source>Sign out and sign in with a super admin account of your organisation.</source>
        <translation>Déconnectez-vous et connectez-vous avec un compte super administrateur de votre organisation.</translation>
    </message>
    <message>
        <source>Qargo did not accept the sign-in.</source>
        <translation>Qargo n&apos;a pas accepté la connexion.</translation>
    </message>
    <message>
        <source>The sign-in has expired.</source>
        <translation>La connexion a expiré.</translation>
    </message>
    <message>
        <source>The browser signed in a different account than the mailbox.</source>
        <translation>Le navigateur a connecté un autre compte que celui de la boîte aux lettres.</translation>
    </message>
    <message>
        <source>Sign out of the other account in the browser, or use a private window, and try again.</source>
        <translation>Déconnectez l&apos;autre compte dans le navigateur, ou utilisez une fenêtre de navigation privée, puis réessayez.</translation>
    </message>
    <message>
        <source>Not every permission Qargo needs was granted for the mailbox.</source>
        <translation>Toutes les autorisations dont Qargo a besoin n&apos;ont pas été accordées pour la boîte aux lettres.</translation>
    </message>
    <message>
        <source>Reauthorise and accept every permission on the consent page.</source>
        <translation>Réautorisez et acceptez toutes les autorisations sur la page de consentement.</translation>
    </message>
    <message>
        <source>The authorisation took too long and expired.</source>
        <translation>L&apos;autorisation a pris trop de temps et a expiré.</translation>
    </message>
    <message>
        <source>Start the authorisation again and finish it in the browser within the time shown.</source>
        <translation>Recommencez l&apos;autorisation et terminez-la dans le navigateur dans le temps indiqué.</translation>
    </message>
    <message>
        <source>Another authorisation of this mailbox is already running.</source>
        <translation>Une autre autorisation de cette boîte aux lettres est déjà en cours.</translation>
    </message>
    <message>
        <source>Wait for it to finish or expire, then try again.</source>
        <translation>Attendez qu&apos;elle se termine ou expire, puis réessayez.</translation>
    </message>
    <message>
        <source>This authorisation has already finished.</source>
        <translation>Cette autorisation est déjà terminée.</translation>
    </message>
    <message>
        <source>This mailbox cannot be authorised in its current state.</source>
        <translation>Cette boîte aux lettres ne peut pas être autorisée dans son état actuel.</translation>
    </message>
    <message>
        <source>Reset the API link status first, then authorise.</source>
        <translation>Réinitialisez d&apos;abord l&apos;état du lien API, puis autorisez.</translation>
    </message>
    <message>
        <source>Only a mailbox whose link failed can be reset.</source>
        <translation>Seule une boîte aux lettres dont le lien a échoué peut être réinitialisée.</translation>
    </message>
    <message>
        <source>Refresh the list to see its current state.</source>
        <translation>Actualisez la liste pour voir son état actuel.</translation>
    </message>
    <message>
        <source>Someone else changed this mailbox first.</source>
        <translation>Quelqu&apos;un d&apos;autre a modifié cette boîte aux lettres avant vous.</translation>
    </message>
    <message>
        <source>The row has been refreshed: check its state and try again if still needed.</source>
        <translation>La ligne a été actualisée&#xa0;: vérifiez son état et réessayez si nécessaire.</translation>
    </message>
    <message>
        <source>The change was refused because the app did not say which version it changed.</source>
        <translation>La modification a été refusée, car l&apos;application n&apos;a pas indiqué quelle version elle modifiait.</translation>
    </message>
    <message>
        <source>This mailbox is already in the list.</source>
        <translation>Cette boîte aux lettres figure déjà dans la liste.</translation>
    </message>
    <message>
        <source>That is not a valid email address.</source>
        <translation>Ce n&apos;est pas une adresse e-mail valide.</translation>
    </message>
    <message>
        <source>This mailbox no longer exists in Qargo.</source>
        <translation>Cette boîte aux lettres n&apos;existe plus dans Qargo.</translation>
    </message>
    <message>
        <source>This mailbox cannot be used through the Microsoft Graph API (for example a shared mailbox without a licence, or an on-premises mailbox).</source>
        <translation>Cette boîte aux lettres ne peut pas être utilisée via l&apos;API Microsoft Graph (par exemple une boîte aux lettres partagée sans licence, ou une boîte aux lettres locale).</translation>
    </message>
    <message>
        <source>Ask your Microsoft 365 administrator to check the mailbox&apos;s licence and type.</source>
        <translation>Demandez à votre administrateur Microsoft 365 de vérifier la licence et le type de la boîte aux lettres.</translation>
    </message>
    <message>
        <source>Qargo is busy and asked the app to slow down.</source>
        <translation>Qargo est surchargé et a demandé à l&apos;application de ralentir.</translation>
    </message>
    <message>
        <source>Microsoft Graph did not accept the mailbox&apos;s sign-in.</source>
        <translation>Microsoft Graph n&apos;a pas accepté la connexion de la boîte aux lettres.</translation>
    </message>
    <message>
        <source>Microsoft Graph refused access to the mailbox.</source>
        <translation>Microsoft Graph a refusé l&apos;accès à la boîte aux lettres.</translation>
    </message>
    <message>
        <source>Reauthorise and accept every permission.</source>
        <translation>Réautorisez et acceptez toutes les autorisations.</translation>
    </message>
    <message>
        <source>This mailbox cannot be used through the Microsoft Graph API.</source>
        <translation>Cette boîte aux lettres ne peut pas être utilisée via l&apos;API Microsoft Graph.</translation>
    </message>
    <message>
        <source>The message is no longer there.</source>
        <translation>Le message n&apos;est plus là.</translation>
    </message>
    <message>
        <source>Microsoft Graph is throttling requests for this mailbox.</source>
        <translation>Microsoft Graph limite les requêtes pour cette boîte aux lettres.</translation>
    </message>
    <message>
        <source>Microsoft Graph is throttling requests for this app.</source>
        <translation>Microsoft Graph limite les requêtes pour cette application.</translation>
    </message>
    <message>
        <source>Microsoft Graph is temporarily unavailable.</source>
        <translation>Microsoft Graph est temporairement indisponible.</translation>
    </message>
    <message>
        <source>Microsoft Graph had an internal error.</source>
        <translation>Microsoft Graph a rencontré une erreur interne.</translation>
    </message>
    <message>
        <source>Try again in a few minutes.</source>
        <translation>Réessayez dans quelques minutes.</translation>
    </message>
    <message>
        <source>Microsoft 365 refused to send as this mailbox.</source>
        <translation>Microsoft 365 a refusé d&apos;envoyer en tant que cette boîte aux lettres.</translation>
    </message>
    <message>
        <source>Reauthorise the mailbox, signing in as the mailbox account itself.</source>
        <translation>Réautorisez la boîte aux lettres en vous connectant avec le compte de la boîte aux lettres lui-même.</translation>
    </message>
    <message>
        <source>Microsoft 365 did not accept the mailbox&apos;s own address as a recipient.</source>
        <translation>Microsoft 365 n&apos;a pas accepté l&apos;adresse de la boîte aux lettres elle-même comme destinataire.</translation>
    </message>
    <message>
        <source>Ask your Microsoft 365 administrator to check that the address is the mailbox&apos;s primary address.</source>
        <translation>Demandez à votre administrateur Microsoft 365 de vérifier que l&apos;adresse est bien l&apos;adresse principale de la boîte aux lettres.</translation>
    </message>
    <message>
        <source>Microsoft 365 has blocked this mailbox from sending mail.</source>
        <translation>Microsoft 365 a bloqué l&apos;envoi de messages depuis cette boîte aux lettres.</translation>
    </message>
    <message>
        <source>This often follows suspected spam. A Microsoft 365 administrator can release it under Restricted entities in the Microsoft Defender portal.</source>
        <translation>Cela fait souvent suite à un soupçon de spam. Un administrateur Microsoft 365 peut la débloquer sous Entités restreintes dans le portail Microsoft Defender.</translation>
    </message>
    <message>
        <source>The mailbox is full.</source>
        <translation>La boîte aux lettres est pleine.</translation>
    </message>
    <message>
        <source>Free some space in the mailbox, or ask your Microsoft 365 administrator to raise its quota.</source>
        <translation>Libérez de l&apos;espace dans la boîte aux lettres, ou demandez à votre administrateur Microsoft 365 d&apos;augmenter son quota.</translation>
    </message>
    <message>
        <source>The send request got no answer, so the app could not tell whether the test message went out.</source>
        <translation>La demande d&apos;envoi n&apos;a pas reçu de réponse&#xa0;: l&apos;application ne peut pas savoir si le message de test est parti.</translation>
    </message>
    <message>
        <source>The app looked for the message instead of sending it again. Check the network and proxy, then run the test again.</source>
        <translation>L&apos;application a cherché le message au lieu de le renvoyer. Vérifiez le réseau et le proxy, puis relancez le test.</translation>
    </message>
    <message>
        <source>Microsoft Graph took a long time to accept the test message.</source>
        <translation>Microsoft Graph a mis longtemps à accepter le message de test.</translation>
    </message>
    <message>
        <source>A slow network or proxy between this computer and Microsoft 365 can cause this. Run the test again; if it stays slow, check the proxy.</source>
        <translation>Un réseau ou un proxy lent entre cet ordinateur et Microsoft 365 peut en être la cause. Relancez le test&#x202f;; si cela reste lent, vérifiez le proxy.</translation>
    </message>
    <message>
        <source>The test message did not arrive in the mailbox in time.</source>
        <translation>Le message de test n&apos;est pas arrivé à temps dans la boîte aux lettres.</translation>
    </message>
    <message>
        <source>Check the tenant&apos;s mail flow in the Exchange admin centre (message trace, quarantine, transport rules) and the mailbox&apos;s inbox rules. If mail flow looks fine, contact Qargo Support with this report.</source>
        <translation>Vérifiez le flux de messagerie du locataire dans le Centre d&apos;administration Exchange (suivi des messages, quarantaine, règles de transport) et les règles de boîte de réception de la boîte aux lettres. Si le flux de messagerie semble correct, contactez le support Qargo avec ce rapport.</translation>
    </message>
    <message>
        <source>Microsoft 365 delivered the test message, but slowly.</source>
        <translation>Microsoft 365 a remis le message de test, mais lentement.</translation>
    </message>
    <message>
        <source>The delay is in Microsoft 365&apos;s delivery, not in Qargo. If it keeps happening, check the tenant&apos;s mail flow with a message trace in the Exchange admin centre.</source>
        <translation>Le retard vient de la remise par Microsoft 365, pas de Qargo. Si cela se reproduit, vérifiez le flux de messagerie du locataire avec un suivi des messages dans le Centre d&apos;administration Exchange.</translation>
    </message>
    <message>
        <source>Qargo&apos;s sync did not see the test message in time.</source>
        <translation>La synchronisation de Qargo n&apos;a pas vu le message de test à temps.</translation>
    </message>
    <message>
        <source>Reauthorise the mailbox and run the test again. If it still fails, reset the link, authorise it again, and contact Qargo Support with this report.</source>
        <translation>Réautorisez la boîte aux lettres et relancez le test. Si l&apos;échec persiste, réinitialisez le lien, autorisez-la de nouveau et contactez le support Qargo avec ce rapport.</translation>
    </message>
    <message>
        <source>Qargo&apos;s sync saw the test message, but slowly.</source>
        <translation>La synchronisation de Qargo a vu le message de test, mais lentement.</translation>
    </message>
    <message>
        <source>The delay is on Qargo&apos;s side. If it keeps happening, contact Qargo Support with this report.</source>
        <translation>Le retard vient de Qargo. Si cela se reproduit, contactez le support Qargo avec ce rapport.</translation>
    </message>
    <message>
        <source>Qargo does not read this mailbox: it is not linked.</source>
        <translation>Qargo ne lit pas cette boîte aux lettres&#xa0;: elle n&apos;est pas liée.</translation>
    </message>
    <message>
        <source>Authorise the mailbox, then run the test again.</source>
        <translation>Autorisez la boîte aux lettres, puis relancez le test.</translation>
    </message>
    <message>
        <source>Qargo cannot read this mailbox until it is reauthorised.</source>
        <translation>Qargo ne peut pas lire cette boîte aux lettres tant qu&apos;elle n&apos;est pas réautorisée.</translation>
    </message>
    <message>
        <source>Reauthorise the mailbox, then run the test again.</source>
        <translation>Réautorisez la boîte aux lettres, puis relancez le test.</translation>
    </message>
    <message>
        <source>Qargo cannot read this mailbox: its last authorisation failed.</source>
        <translation>Qargo ne peut pas lire cette boîte aux lettres&#xa0;: sa dernière autorisation a échoué.</translation>
    </message>
    <message>
        <source>Reset the API link status, authorise the mailbox again, then run the test again.</source>
        <translation>Réinitialisez l&apos;état du lien API, autorisez de nouveau la boîte aux lettres, puis relancez le test.</translation>
    </message>
    <message>
        <source>Microsoft refused the mailbox&apos;s saved sign-in (the grant was revoked or has expired).</source>
        <translation>Microsoft a refusé la connexion enregistrée de la boîte aux lettres (l&apos;accès accordé a été révoqué ou a expiré).</translation>
    </message>
    <message>
        <source>This computer has no saved sign-in for the mailbox.</source>
        <translation>Cet ordinateur n&apos;a aucune connexion enregistrée pour la boîte aux lettres.</translation>
    </message>
    <message>
        <source>Run the test again and sign in as the mailbox in the browser when asked.</source>
        <translation>Relancez le test et connectez-vous en tant que boîte aux lettres dans le navigateur quand cela vous est demandé.</translation>
    </message>
    <message>
        <source>This computer&apos;s clock is far from the servers&apos; clocks.</source>
        <translation>L&apos;horloge de cet ordinateur s&apos;écarte nettement de celle des serveurs.</translation>
    </message>
    <message>
        <source>Set the clock to synchronise automatically. Sign-ins can fail when the clock is more than five minutes off.</source>
        <translation>Réglez l&apos;horloge pour qu&apos;elle se synchronise automatiquement. Les connexions peuvent échouer si l&apos;horloge a plus de cinq minutes d&apos;écart.</translation>
    </message>
    <message>
        <source>The test message could not be deleted.</source>
        <translation>Le message de test n&apos;a pas pu être supprimé.</translation>
    </message>
    <message>
        <source>Delete it by hand: its subject starts with [Qargo self-test].</source>
        <translation>Supprimez-le à la main&#xa0;: son objet commence par [Qargo self-test].</translation>
    </message>
    <message>
        <source>The test ran out of time.</source>
        <translation>Le test a manqué de temps.</translation>
    </message>
    <message>
        <source>Run it again, with a longer time limit if the services are slow today.</source>
        <translation>Relancez-le, avec un délai plus long si les services sont lents aujourd&apos;hui.</translation>
    </message>
    <message>
        <source>The service is busy and asked the app to slow down.</source>
        <translation>Le service est surchargé et a demandé à l&apos;application de ralentir.</translation>
    </message>
    <message>
        <source>The service is temporarily unavailable.</source>
        <translation>Le service est temporairement indisponible.</translation>
    </message>
    <message>
        <source>The app could not reach the service.</source>
        <translation>L&apos;application n&apos;a pas pu joindre le service.</translation>
    </message>
    <message>
        <source>Check the network connection and proxy settings, then retry.</source>
        <translation>Vérifiez la connexion réseau et les paramètres de proxy, puis réessayez.</translation>
    </message>
    <message>
        <source>The service&apos;s name could not be found (DNS).</source>
        <translation>Le nom du service est introuvable (DNS).</translation>
    </message>
    <message>
        <source>Check the network connection and the configured addresses. On a network that only reaches the internet through a proxy, set the proxy in the settings.</source>
        <translation>Vérifiez la connexion réseau et les adresses configurées. Sur un réseau qui n&apos;accède à Internet que par un proxy, indiquez le proxy dans les paramètres.</translation>
    </message>
    <message>
        <source>The service did not answer in time.</source>
        <translation>Le service n&apos;a pas répondu à temps.</translation>
    </message>
    <message>
        <source>A slow network, a VPN, or a firewall that silently drops the connection can cause this. Check the network connection, then retry.</source>
        <translation>Un réseau lent, un VPN ou un pare-feu qui coupe la connexion sans prévenir peut en être la cause. Vérifiez la connexion réseau, puis réessayez.</translation>
    </message>
    <message>
        <source>The service&apos;s certificate was issued by an authority this computer does not trust.</source>
        <translation>Le certificat du service a été émis par une autorité à laquelle cet ordinateur ne fait pas confiance.</translation>
    </message>
    <message>
        <source>Usually a TLS-inspecting proxy (a corporate firewall or antivirus that opens secure connections) is in the way. Ask IT to install the proxy&apos;s root certificate in the computer&apos;s trusted roots, or save it as a PEM file and set extra_ca_file in the settings. Diagnostics names who issued the certificate.</source>
        <translation>En général, un proxy qui inspecte le TLS (un pare-feu d&apos;entreprise ou un antivirus qui ouvre les connexions sécurisées) s&apos;interpose. Demandez au service informatique d&apos;installer le certificat racine du proxy parmi les racines de confiance de l&apos;ordinateur, ou enregistrez-le dans un fichier PEM et indiquez-le dans extra_ca_file dans les paramètres. Le diagnostic indique qui a émis le certificat.</translation>
    </message>
    <message>
        <source>The service&apos;s certificate has expired or is not valid yet.</source>
        <translation>Le certificat du service a expiré ou n&apos;est pas encore valide.</translation>
    </message>
    <message>
        <source>Check that this computer&apos;s date and time are right (Diagnostics shows how far the clock is from the servers&apos;). If they are, a proxy may be presenting an old certificate: tell IT.</source>
        <translation>Vérifiez que la date et l&apos;heure de cet ordinateur sont exactes (le diagnostic indique l&apos;écart avec l&apos;horloge des serveurs). Si elles le sont, un proxy présente peut-être un ancien certificat&#xa0;: prévenez le service informatique.</translation>
    </message>
    <message>
        <source>The certificate that answered belongs to a different address.</source>
        <translation>Le certificat qui a répondu appartient à une autre adresse.</translation>
    </message>
    <message>
        <source>A proxy or a network sign-in page (hotel or guest Wi-Fi) may be answering instead of the service. Sign in to the network in a browser, or ask IT.</source>
        <translation>Un proxy ou une page de connexion au réseau (Wi-Fi d&apos;hôtel ou d&apos;invités) répond peut-être à la place du service. Connectez-vous au réseau dans un navigateur, ou adressez-vous au service informatique.</translation>
    </message>
    <message>
        <source>The secure connection (TLS) to the service failed.</source>
        <translation>La connexion sécurisée (TLS) au service a échoué.</translation>
    </message>
    <message>
        <source>A proxy or firewall may be blocking or altering the connection. Run Diagnostics and send the support bundle to your support contact.</source>
        <translation>Un proxy ou un pare-feu bloque ou modifie peut-être la connexion. Lancez le diagnostic et envoyez le dossier d&apos;assistance à votre contact de support.</translation>
    </message>
    <message>
        <source>The proxy asked for a user name and password.</source>
        <translation>Le proxy a demandé un nom d&apos;utilisateur et un mot de passe.</translation>
    </message>
    <message>
        <source>Put them in the proxy setting (proxy = &quot;http://user:password@proxy.example:8080&quot;), or ask IT to let the app through. Proxies that sign in with the Windows account (NTLM or Kerberos) are not supported: ask IT for an exception for the Microsoft and Qargo addresses.</source>
        <translation>Indiquez-les dans le paramètre du proxy (proxy = &quot;http://utilisateur:motdepasse@proxy.example:8080&quot;), ou demandez au service informatique de laisser passer l&apos;application. Les proxys qui s&apos;authentifient avec le compte Windows (NTLM ou Kerberos) ne sont pas pris en charge&#xa0;: demandez au service informatique une exception pour les adresses de Microsoft et de Qargo.</translation>
    </message>
    <message>
        <source>The proxy refused to connect the app to the service.</source>
        <translation>Le proxy a refusé de connecter l&apos;application au service.</translation>
    </message>
    <message>
        <source>The proxy may block this address or could not reach it. Ask IT to allow the Microsoft sign-in, Microsoft Graph and Qargo addresses (Diagnostics lists them).</source>
        <translation>Le proxy bloque peut-être cette adresse, ou n&apos;a pas pu la joindre. Demandez au service informatique d&apos;autoriser les adresses de connexion Microsoft, de Microsoft Graph et de Qargo (le diagnostic les énumère).</translation>
    </message>
    <message>
        <source>The proxy could not be reached.</source>
        <translation>Le proxy est injoignable.</translation>
    </message>
    <message>
        <source>Check the proxy in the settings (or the system&apos;s proxy settings) and the network connection.</source>
        <translation>Vérifiez le proxy dans les paramètres (ou les paramètres de proxy du système) et la connexion réseau.</translation>
    </message>
    <message>
        <source>The service sent an answer the app could not understand.</source>
        <translation>Le service a envoyé une réponse que l&apos;application n&apos;a pas comprise.</translation>
    </message>
    <message>
        <source>A proxy may have replaced the answer. Retry; if it persists, contact Qargo Support.</source>
        <translation>Un proxy a peut-être remplacé la réponse. Réessayez&#x202f;; si cela persiste, contactez le support Qargo.</translation>
    </message>
    <message>
        <source>Cancelled.</source>
        <translation>Annulé.</translation>
    </message>
    <message>
        <source>The sign-in was not completed in time.</source>
        <translation>La connexion n&apos;a pas été terminée à temps.</translation>
    </message>
    <message>
        <source>Try again and finish the sign-in in the browser within the time shown.</source>
        <translation>Réessayez et terminez la connexion dans le navigateur dans le temps indiqué.</translation>
    </message>
    <message>
        <source>You need to sign in.</source>
        <translation>Vous devez vous connecter.</translation>
    </message>
    <message>
        <source>No browser could be opened on this computer.</source>
        <translation>Aucun navigateur n&apos;a pu être ouvert sur cet ordinateur.</translation>
    </message>
    <message>
        <source>Copy the sign-in link and open it in a browser, or use sign-in on another device.</source>
        <translation>Copiez le lien de connexion et ouvrez-le dans un navigateur, ou connectez-vous depuis un autre appareil.</translation>
    </message>
    <message>
        <source>Another sign-in is already waiting in the browser.</source>
        <translation>Une autre connexion attend déjà dans le navigateur.</translation>
    </message>
    <message>
        <source>Finish or cancel it first.</source>
        <translation>Terminez-la ou annulez-la d&apos;abord.</translation>
    </message>
    <message>
        <source>Something went wrong that the app does not recognise.</source>
        <translation>Un problème que l&apos;application ne reconnaît pas est survenu.</translation>
    </message>
    <message>
        <source>Contact Qargo Support with the error code and correlation id shown.</source>
        <translation>Contactez le support Qargo en indiquant le code d&apos;erreur et l&apos;identifiant de corrélation affichés.</translation>
    </message>
</context>
<context>
    <name>app</name>
    <message>
        <source>Sandbox: sign in as {account} (a super admin). The sandbox&apos;s sign-in page lets you pick the account; no password is needed.</source>
        <translation>Bac à sable&#xa0;: connectez-vous en tant que {account} (un super administrateur). La page de connexion du bac à sable vous laisse choisir le compte&#x202f;; aucun mot de passe n&apos;est nécessaire.</translation>
    </message>
    <message>
        <source>Connecting...</source>
        <translation>Connexion...</translation>
    </message>
    <message>
        <source>Starting the built-in sandbox...</source>
        <translation>Démarrage du bac à sable intégré...</translation>
    </message>
    <message>
        <source>The app could not start: {problem}</source>
        <translation>L&apos;application n&apos;a pas pu démarrer&#xa0;: {problem}</translation>
    </message>
    <message>
        <source>{problem} You will need to sign in again next time.</source>
        <translation>{problem} Vous devrez vous reconnecter la prochaine fois.</translation>
    </message>
</context>
<context>
    <name>audit</name>
    <message>
        <source>Mailbox added</source>
        <translation>Boîte aux lettres ajoutée</translation>
    </message>
    <message>
        <source>Authorisation started</source>
        <translation>Autorisation commencée</translation>
    </message>
    <message>
        <source>Mailbox linked</source>
        <translation>Boîte aux lettres liée</translation>
    </message>
    <message>
        <source>Authorisation failed</source>
        <translation>Échec de l&apos;autorisation</translation>
    </message>
    <message>
        <source>Authorisation expired</source>
        <translation>Autorisation expirée</translation>
    </message>
    <message>
        <source>Authorisation cancelled</source>
        <translation>Autorisation annulée</translation>
    </message>
    <message>
        <source>Link reset</source>
        <translation>Lien réinitialisé</translation>
    </message>
    <message>
        <source>Grant revoked</source>
        <translation>Accès révoqué</translation>
    </message>
    <message>
        <source>Mailbox changed</source>
        <translation>Boîte aux lettres modifiée</translation>
    </message>
    <message>
        <source>Mailbox removed</source>
        <translation>Boîte aux lettres retirée</translation>
    </message>
    <message>
        <source>Event</source>
        <translation>Événement</translation>
    </message>
    <message>
        <source>Unknown time</source>
        <translation>Heure inconnue</translation>
    </message>
    <message>
        <source>app {version} on {machine}</source>
        <translation>application {version} sur {machine}</translation>
    </message>
    <message>
        <source>app {version}</source>
        <translation>application {version}</translation>
    </message>
    <message>
        <source>unknown</source>
        <translation>inconnue</translation>
    </message>
    <message>
        <source>What: {what} ({code})</source>
        <translation>Quoi&#xa0;: {what} ({code})</translation>
    </message>
    <message>
        <source>Details: {detail}</source>
        <translation>Détails&#xa0;: {detail}</translation>
    </message>
    <message>
        <source>When: {when}</source>
        <translation>Quand&#xa0;: {when}</translation>
    </message>
    <message>
        <source>Who: {actor}</source>
        <translation>Qui&#xa0;: {actor}</translation>
    </message>
    <message>
        <source>App version: {version}</source>
        <translation>Version de l&apos;application&#xa0;: {version}</translation>
    </message>
    <message>
        <source>Machine: {machine}</source>
        <translation>Ordinateur&#xa0;: {machine}</translation>
    </message>
</context>
<context>
    <name>dialogs</name>
    <message>
        <source>Reset API link status</source>
        <translation>Réinitialiser l&apos;état du lien API</translation>
    </message>
    <message>
        <source>Reset the API link status of {address}?</source>
        <translation>Réinitialiser l&apos;état du lien API de {address}&#x202f;?</translation>
    </message>
    <message>
        <source>The mailbox becomes Unlinked. Qargo keeps not reading or sending its mail until someone authorises it again.</source>
        <translation>La boîte aux lettres passe à l&apos;état Non lié. Qargo ne lira ni n&apos;enverra ses messages tant que personne ne l&apos;aura autorisée de nouveau.</translation>
    </message>
    <message>
        <source>Remove mailbox</source>
        <translation>Retirer la boîte aux lettres</translation>
    </message>
    <message>
        <source>Remove {address} from Qargo?</source>
        <translation>Retirer {address} de Qargo&#x202f;?</translation>
    </message>
    <message>
        <source>Qargo stops reading and sending this mailbox&apos;s mail and forgets its link. You can add it again later, but it will need to be authorised again.</source>
        <translation>Qargo cesse de lire et d&apos;envoyer les messages de cette boîte aux lettres et oublie son lien. Vous pourrez l&apos;ajouter de nouveau plus tard, mais il faudra l&apos;autoriser de nouveau.</translation>
    </message>
    <message>
        <source>Add mailbox</source>
        <translation>Ajouter une boîte aux lettres</translation>
    </message>
    <message>
        <source>Add a Microsoft 365 mailbox that Qargo should read and send mail for. After adding it, authorise it by signing in as the mailbox.</source>
        <translation>Ajoutez une boîte aux lettres Microsoft 365 dont Qargo doit lire et envoyer les messages. Une fois ajoutée, autorisez-la en vous connectant en tant que boîte aux lettres.</translation>
    </message>
    <message>
        <source>Email address</source>
        <translation>Adresse e-mail</translation>
    </message>
    <message>
        <source>The mailbox&apos;s Microsoft 365 address</source>
        <translation>L&apos;adresse Microsoft 365 de la boîte aux lettres</translation>
    </message>
    <message>
        <source>Optional</source>
        <translation>Facultatif</translation>
    </message>
    <message>
        <source>Display name</source>
        <translation>Nom d&apos;affichage</translation>
    </message>
    <message>
        <source>The name shown for the mailbox in the list (optional)</source>
        <translation>Le nom affiché pour la boîte aux lettres dans la liste (facultatif)</translation>
    </message>
    <message>
        <source>&amp;Email address:</source>
        <translation>Adresse &amp;e-mail&#xa0;:</translation>
    </message>
    <message>
        <source>&amp;Display name:</source>
        <translation>&amp;Nom d&apos;affichage&#xa0;:</translation>
    </message>
    <message>
        <source>Sign in with Microsoft</source>
        <translation>Se connecter avec Microsoft</translation>
    </message>
    <message>
        <source>Finish signing in in your browser</source>
        <translation>Terminez la connexion dans votre navigateur</translation>
    </message>
    <message>
        <source>A Microsoft sign-in page is opening in your browser. Sign in with your Qargo super admin account and accept. Qargo Desktop continues by itself when you are done.</source>
        <translation>Une page de connexion Microsoft s&apos;ouvre dans votre navigateur. Connectez-vous avec votre compte super administrateur Qargo et acceptez. Qargo Desktop reprend de lui-même une fois que vous avez terminé.</translation>
    </message>
    <message>
        <source>Time left</source>
        <translation>Temps restant</translation>
    </message>
    <message>
        <source>If the page did not open, copy this link into a browser on this computer:</source>
        <translation>Si la page ne s&apos;est pas ouverte, copiez ce lien dans un navigateur de cet ordinateur&#xa0;:</translation>
    </message>
    <message>
        <source>Sign-in link</source>
        <translation>Lien de connexion</translation>
    </message>
    <message>
        <source>&amp;Copy link</source>
        <translation>&amp;Copier le lien</translation>
    </message>
    <message>
        <source>Copy the sign-in link</source>
        <translation>Copier le lien de connexion</translation>
    </message>
    <message>
        <source>Stop waiting for the browser (Esc)</source>
        <translation>Cesser d&apos;attendre le navigateur (Échap)</translation>
    </message>
    <message>
        <source>No browser could be opened</source>
        <translation>Aucun navigateur n&apos;a pu être ouvert</translation>
    </message>
    <message>
        <source>Copy the sign-in link below and open it in a browser on this computer. Sign in there; Qargo Desktop continues by itself when you are done.</source>
        <translation>Copiez le lien de connexion ci-dessous et ouvrez-le dans un navigateur de cet ordinateur. Connectez-vous-y&#x202f;; Qargo Desktop reprend de lui-même une fois que vous avez terminé.</translation>
    </message>
    <message>
        <source>Sign-in link:</source>
        <translation>Lien de connexion&#xa0;:</translation>
    </message>
    <message>
        <source>Time left: {minutes}:{seconds}</source>
        <translation>Temps restant&#xa0;: {minutes}:{seconds}</translation>
    </message>
    <message>
        <source>Copied</source>
        <translation>Copié</translation>
    </message>
    <message>
        <source>Cancelling...</source>
        <translation>Annulation...</translation>
    </message>
    <message>
        <source>Cancelling the sign-in...</source>
        <translation>Annulation de la connexion...</translation>
    </message>
    <message>
        <source>{app}: unexpected problem</source>
        <translation>{app}&#xa0;: problème inattendu</translation>
    </message>
    <message>
        <source>{app} met a problem it did not expect.</source>
        <translation>{app} a rencontré un problème inattendu.</translation>
    </message>
    <message>
        <source>What happened: {summary}</source>
        <translation>Ce qui s&apos;est passé&#xa0;: {summary}</translation>
    </message>
    <message>
        <source>The details were written to the log. If this keeps happening, copy the report below and send it to Qargo Support. You can keep working, but if the window behaves oddly, quit and start the app again.</source>
        <translation>Les détails ont été écrits dans le journal. Si cela se reproduit, copiez le rapport ci-dessous et envoyez-le au support Qargo. Vous pouvez continuer à travailler, mais si la fenêtre se comporte bizarrement, quittez et relancez l&apos;application.</translation>
    </message>
    <message>
        <source>The report was also saved as {path}</source>
        <translation>Le rapport a aussi été enregistré sous {path}</translation>
    </message>
    <message>
        <source>&lt;b&gt;Check the report before you share it:&lt;/b&gt; it may contain personal data, such as email addresses and names of mailboxes.</source>
        <translation>&lt;b&gt;Vérifiez le rapport avant de le partager&#xa0;:&lt;/b&gt; il peut contenir des données personnelles, comme des adresses e-mail et des noms de boîtes aux lettres.</translation>
    </message>
    <message>
        <source>Problem report</source>
        <translation>Rapport de problème</translation>
    </message>
    <message>
        <source>&amp;Copy report</source>
        <translation>&amp;Copier le rapport</translation>
    </message>
    <message>
        <source>&amp;Quit {app}</source>
        <translation>&amp;Quitter {app}</translation>
    </message>
    <message>
        <source>&amp;Keep working</source>
        <translation>Continuer à &amp;travailler</translation>
    </message>
    <message>
        <source>Save support bundle</source>
        <translation>Enregistrer le dossier d&apos;assistance</translation>
    </message>
    <message>
        <source>Zip archives (*.zip)</source>
        <translation>Archives zip (*.zip)</translation>
    </message>
    <message>
        <source>Built with {components}.</source>
        <translation>Conçu avec {components}.</translation>
    </message>
    <message>
        <source>{app} {version} is proprietary software. It uses the components below under their own licences.</source>
        <translation>{app} {version} est un logiciel propriétaire. Il utilise les composants ci-dessous sous leurs propres licences.</translation>
    </message>
    <message>
        <source>Qt and PySide6 are used under the GNU Lesser General Public License version 3; their source code is available from qt.io.</source>
        <translation>Qt et PySide6 sont utilisés sous la licence GNU Lesser General Public License version 3&#x202f;; leur code source est disponible sur qt.io.</translation>
    </message>
    <message>
        <source>About {app}</source>
        <translation>À propos de {app}</translation>
    </message>
    <message>
        <source>&lt;b&gt;{app}&lt;/b&gt; {version}&lt;br&gt;Keeps your organisation&apos;s linked Microsoft 365 mailboxes healthy.</source>
        <translation>&lt;b&gt;{app}&lt;/b&gt; {version}&lt;br&gt;Garde en bon état les boîtes aux lettres Microsoft 365 liées de votre organisation.</translation>
    </message>
    <message>
        <source>{app}: settings</source>
        <translation>{app}&#xa0;: paramètres</translation>
    </message>
    <message>
        <source>The app cannot start because some settings cannot be used.</source>
        <translation>L&apos;application ne peut pas démarrer, car certains paramètres sont inutilisables.</translation>
    </message>
    <message>
        <source>Correct them and start the app again.</source>
        <translation>Corrigez-les et relancez l&apos;application.</translation>
    </message>
    <message>
        <source>{app} is already running but does not answer.</source>
        <translation>{app} est déjà en cours d&apos;exécution mais ne répond pas.</translation>
    </message>
    <message>
        <source>Close the other window, or end it in the Task Manager, then start the app again.</source>
        <translation>Fermez l&apos;autre fenêtre, ou arrêtez-la dans le Gestionnaire des tâches, puis relancez l&apos;application.</translation>
    </message>
</context>
<context>
    <name>selftest</name>
    <message>
        <source>Reach Qargo, Microsoft sign-in and Microsoft Graph</source>
        <translation>Joindre Qargo, la connexion Microsoft et Microsoft Graph</translation>
    </message>
    <message>
        <source>Sign in as the mailbox</source>
        <translation>Se connecter en tant que boîte aux lettres</translation>
    </message>
    <message>
        <source>Send a test message to the mailbox itself</source>
        <translation>Envoyer un message de test à la boîte aux lettres elle-même</translation>
    </message>
    <message>
        <source>Wait for it to arrive</source>
        <translation>Attendre son arrivée</translation>
    </message>
    <message>
        <source>Wait for Qargo&apos;s sync to see it</source>
        <translation>Attendre que la synchronisation de Qargo le voie</translation>
    </message>
    <message>
        <source>Delete the test message</source>
        <translation>Supprimer le message de test</translation>
    </message>
    <message>
        <source>Passed</source>
        <translation>Réussi</translation>
    </message>
    <message>
        <source>Passed with warnings</source>
        <translation>Réussi avec des avertissements</translation>
    </message>
    <message>
        <source>Failed</source>
        <translation>Échec</translation>
    </message>
    <message>
        <source>Could not run</source>
        <translation>Exécution impossible</translation>
    </message>
    <message>
        <source>Cancelled</source>
        <translation>Annulé</translation>
    </message>
</context>
<context>
    <name>status</name>
    <message>
        <source>Unknown ({raw_status})</source>
        <translation>Inconnu ({raw_status})</translation>
    </message>
    <message>
        <source>Linked</source>
        <translation>Lié</translation>
    </message>
    <message>
        <source>Qargo reads and sends this mailbox&apos;s mail.</source>
        <translation>Qargo lit et envoie les messages de cette boîte aux lettres.</translation>
    </message>
    <message>
        <source>Nothing to do. Run a test if mail seems slow; reauthorise if scopes changed.</source>
        <translation>Rien à faire. Lancez un test si la messagerie semble lente&#x202f;; réautorisez si les autorisations ont changé.</translation>
    </message>
    <message>
        <source>Unlinked</source>
        <translation>Non lié</translation>
    </message>
    <message>
        <source>Qargo has no access to this mailbox.</source>
        <translation>Qargo n&apos;a pas accès à cette boîte aux lettres.</translation>
    </message>
    <message>
        <source>Choose Authorise API and sign in as the mailbox account.</source>
        <translation>Choisissez Autoriser l&apos;API et connectez-vous avec le compte de la boîte aux lettres.</translation>
    </message>
    <message>
        <source>Pending authorisation: Reauthorise API</source>
        <translation>Autorisation en attente&#xa0;: réautoriser l&apos;API</translation>
    </message>
    <message>
        <source>The mailbox&apos;s grant is no longer valid (password change, revoked consent, long inactivity or new permissions). Mail in Qargo is not updating.</source>
        <translation>L&apos;accès accordé pour la boîte aux lettres n&apos;est plus valide (changement de mot de passe, consentement révoqué, longue inactivité ou nouvelles autorisations). Les messages ne sont plus mis à jour dans Qargo.</translation>
    </message>
    <message>
        <source>Choose Reauthorise API and sign in as the mailbox account.</source>
        <translation>Choisissez Réautoriser l&apos;API et connectez-vous avec le compte de la boîte aux lettres.</translation>
    </message>
    <message>
        <source>Pending authorisation: Reset API link status</source>
        <translation>Autorisation en attente&#xa0;: réinitialiser l&apos;état du lien API</translation>
    </message>
    <message>
        <source>The last authorisation failed or was abandoned. Mail in Qargo is not updating.</source>
        <translation>La dernière autorisation a échoué ou a été abandonnée. Les messages ne sont plus mis à jour dans Qargo.</translation>
    </message>
    <message>
        <source>Choose Reset API link status, then authorise the mailbox again.</source>
        <translation>Choisissez Réinitialiser l&apos;état du lien API, puis autorisez de nouveau la boîte aux lettres.</translation>
    </message>
    <message>
        <source>Authorising...</source>
        <translation>Autorisation en cours...</translation>
    </message>
    <message>
        <source>An authorisation is in progress in someone&apos;s browser.</source>
        <translation>Une autorisation est en cours dans le navigateur de quelqu&apos;un.</translation>
    </message>
    <message>
        <source>Wait for it to finish, or cancel it if it is your own.</source>
        <translation>Attendez qu&apos;elle se termine, ou annulez-la si c&apos;est la vôtre.</translation>
    </message>
    <message>
        <source>Unknown</source>
        <translation>Inconnu</translation>
    </message>
    <message>
        <source>Qargo reported a state this version of the app does not know.</source>
        <translation>Qargo a indiqué un état que cette version de l&apos;application ne connaît pas.</translation>
    </message>
    <message>
        <source>Refresh the list; update the app if this stays.</source>
        <translation>Actualisez la liste&#x202f;; mettez à jour l&apos;application si cela persiste.</translation>
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
        <translation>Motif&#xa0;: {reason}</translation>
    </message>
    <message>
        <source>The attempt expires at {time}.</source>
        <translation>La tentative expire le {time}.</translation>
    </message>
    <message>
        <source>Status: {status}. {next_step}</source>
        <translation>État&#xa0;: {status}. {next_step}</translation>
    </message>
    <message>
        <source>{date}, {time}</source>
        <comment>a date and a time of day</comment>
        <translation>{date} à {time}</translation>
    </message>
    <message>
        <source>Never</source>
        <translation>Jamais</translation>
    </message>
    <message>
        <source>Just now</source>
        <translation>À l&apos;instant</translation>
    </message>
    <message numerus="yes">
        <source>%n min ago</source>
        <translation>
            <numerusform>il y a %n min</numerusform>
            <numerusform>il y a %n min</numerusform>
        </translation>
    </message>
    <message numerus="yes">
        <source>%n hour(s) ago</source>
        <translation>
            <numerusform>il y a %n heure</numerusform>
            <numerusform>il y a %n heures</numerusform>
        </translation>
    </message>
    <message>
        <source>Yesterday</source>
        <translation>Hier</translation>
    </message>
    <message numerus="yes">
        <source>%n day(s) ago</source>
        <translation>
            <numerusform>il y a %n jour</numerusform>
            <numerusform>il y a %n jours</numerusform>
        </translation>
    </message>
    <message>
        <source>Something went wrong that the app does not recognise ({kind}).</source>
        <translation>Un problème que l&apos;application ne reconnaît pas est survenu ({kind}).</translation>
    </message>
    <message>
        <source>The browser signed in {signed_in_as}, but this mailbox is {needed}. Nothing was changed in Qargo. Sign out of the other account in the browser, or use a private window, then try again and sign in as {needed}.</source>
        <translation>Le navigateur a connecté {signed_in_as}, mais cette boîte aux lettres est {needed}. Rien n&apos;a été modifié dans Qargo. Déconnectez l&apos;autre compte dans le navigateur, ou utilisez une fenêtre de navigation privée, puis réessayez en vous connectant avec {needed}.</translation>
    </message>
    <message>
        <source>Error code: {code}</source>
        <translation>Code d&apos;erreur&#xa0;: {code}</translation>
    </message>
    <message>
        <source>Code: {code}</source>
        <translation>Code&#xa0;: {code}</translation>
    </message>
    <message>
        <source>Correlation id: {id}</source>
        <translation>Identifiant de corrélation&#xa0;: {id}</translation>
    </message>
    <message>
        <source>{message} (code {code})</source>
        <translation>{message} (code {code})</translation>
    </message>
    <message>
        <source>Unrecognised error (code {code})</source>
        <translation>Erreur non reconnue (code {code})</translation>
    </message>
    <message>
        <source>No error recorded.</source>
        <translation>Aucune erreur enregistrée.</translation>
    </message>
    <message>
        <source>The app does not recognise this error.</source>
        <translation>L&apos;application ne reconnaît pas cette erreur.</translation>
    </message>
    <message>
        <source>Contact Qargo Support with the code below.</source>
        <translation>Contactez le support Qargo en indiquant le code ci-dessous.</translation>
    </message>
    <message>
        <source>Message from Qargo: {message}</source>
        <translation>Message de Qargo&#xa0;: {message}</translation>
    </message>
    <message>
        <source>At: {time}</source>
        <translation>Date&#xa0;: {time}</translation>
    </message>
    <message numerus="yes">
        <source>%Ln mailbox(es)</source>
        <translation>
            <numerusform>%Ln boîte aux lettres</numerusform>
            <numerusform>%Ln boîtes aux lettres</numerusform>
        </translation>
    </message>
</context>
</TS>
