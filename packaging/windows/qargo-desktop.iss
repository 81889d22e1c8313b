; Inno Setup 6 script of the Qargo Desktop installer for Windows (x64), per user, no admin rights.
;
; Build the bundle first on Windows (docs/release-checklist.md), then from the repository root:
;   iscc packaging\windows\qargo-desktop.iss
; which writes dist\qargo-desktop-<version>-windows-x64-setup.exe. The version is read from
; the version resource build.spec put on qargo-desktop.exe (itself from
; qargo_desktop.__version__); /DAppVersion=... overrides it.
;
; Signing (docs/release-checklist.md): define a sign tool named "qargosign" in the Inno
; Setup IDE (Tools > Configure Sign Tools) or on the command line, and pass /DSign:
;   iscc /DSign "/Sqargosign=signtool.exe sign /fd sha256 /tr <timestamp URL> /td sha256 /sha1 <thumbprint> $f" packaging\windows\qargo-desktop.iss
; The installer and its uninstaller are then signed; the executables inside must already
; have been signed before this step.
;
; Upgrades: the AppId below never changes, so a newer installer upgrades the installed copy
; in place (same folder, same Start menu entry, one uninstaller). The settings, the
; encrypted token cache and the logs are not in the install folder: they live in the
; user's folders (%LOCALAPPDATA%\Qargo\qargo-desktop, from platformdirs) and the token
; cache key in the Windows Credential Manager (service "qargo-desktop"). Neither an upgrade
; nor the uninstaller touches them, so the admin stays signed in across upgrades.
;
; This script has not been compiled on the machine the project is developed on (Linux, no
; Inno Setup): see docs/packaging.md, "What is not built here".

#define AppName "Qargo Desktop"
#define AppExeName "qargo-desktop.exe"
#define BundleDir "..\..\dist\qargo-desktop"
#define AppExe AddBackslash(SourcePath) + BundleDir + "\" + AppExeName
#ifndef AppVersion
  #define AppVersion GetStringFileInfo(AppExe, "ProductVersion")
#endif
; Windows wants four numbers here (0.2.0rc1 is 0.2.0.0): read from the same resource.
#define AppNumericVersion GetVersionNumbersString(AppExe)
#if AppVersion == ""
  #error Cannot read the version of dist\qargo-desktop\qargo-desktop.exe: build the bundle first, or pass /DAppVersion=...
#endif

[Setup]
; Never change this GUID: it is how Windows recognises an installed copy to upgrade.
AppId={{1194266C-6CA3-4D07-B525-7FC0CDB338B5}
AppName={#AppName}
AppVersion={#AppVersion}
AppVerName={#AppName} {#AppVersion}
AppPublisher=Qargo
VersionInfoVersion={#AppNumericVersion}
VersionInfoProductName={#AppName}
; Per user: no administrator rights, installed under %LOCALAPPDATA%\Programs.
PrivilegesRequired=lowest
DefaultDirName={userpf}\{#AppName}
DefaultGroupName={#AppName}
DisableProgramGroupPage=yes
UsePreviousAppDir=yes
ArchitecturesAllowed=x64compatible
ArchitecturesInstallIn64BitMode=x64compatible
MinVersion=10.0
OutputDir=..\..\dist
OutputBaseFilename=qargo-desktop-{#AppVersion}-windows-x64-setup
; Rendered from resources/icons/app.svg by build.spec into its work folder.
SetupIconFile=..\..\build\build\qargo-desktop.ico
UninstallDisplayIcon={app}\{#AppExeName}
UninstallDisplayName={#AppName}
Compression=lzma2/max
SolidCompression=yes
WizardStyle=modern
; A running copy holds its files open: ask it to close (Restart Manager), then restart it.
CloseApplications=yes
RestartApplications=yes
#ifdef Sign
SignTool=qargosign
SignedUninstaller=yes
#endif

[Languages]
Name: "english"; MessagesFile: "compiler:Default.isl"

[Tasks]
Name: "desktopicon"; Description: "{cm:CreateDesktopIcon}"; GroupDescription: "{cm:AdditionalIcons}"; Flags: unchecked

[InstallDelete]
; An upgrade replaces the program files as a whole: files of the previous version that the
; new one no longer ships must not linger beside it (PyInstaller loads what it finds there).
Type: filesandordirs; Name: "{app}\_internal"

[Files]
Source: "{#BundleDir}\*"; DestDir: "{app}"; Flags: ignoreversion recursesubdirs createallsubdirs

[Icons]
Name: "{autoprograms}\{#AppName}"; Filename: "{app}\{#AppExeName}"
Name: "{autodesktop}\{#AppName}"; Filename: "{app}\{#AppExeName}"; Tasks: desktopicon

[Run]
Filename: "{app}\{#AppExeName}"; Description: "{cm:LaunchProgram,{#AppName}}"; Flags: nowait postinstall skipifsilent

; No [UninstallDelete] for the user's folders on purpose: see the header. To remove the
; sign-in as well, run "qargo-desktop-cli.exe signout" before uninstalling.
